"""The stand-alone verifier: RFC 9162 test vectors and brute-force proofs against the RFC's own
recursion, the Go signed-note example byte for byte, checkpoints, the entry encoding, proof
documents and the command line."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from escapement_client.transparency import (
    EMPTY_ROOT,
    Checkpoint,
    Frontier,
    TransparencyError,
    checkpoint_body,
    checkpoint_parse,
    consistency_path,
    consistency_verify,
    entry_decode,
    entry_encode,
    inclusion_path,
    inclusion_verify,
    leaf_hash,
    main,
    node_hash,
    note_sign,
    note_verify,
    proof_verify,
    root_from_leaf_hashes,
    signer_key_generate,
    subtree_hash,
    verifier_key_for,
)

# --- References, written from RFC 9162 directly -------------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(hashes: Sequence[bytes]) -> bytes:
    """RFC 9162's MTH over leaf hashes, recursive as the RFC writes it."""
    if not hashes:
        return sha256(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:]))


def rfc_path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    if m < k:
        return [*rfc_path(m, hashes[:k]), mth(hashes[k:])]
    return [*rfc_path(m - k, hashes[k:]), mth(hashes[:k])]


def rfc_subproof(m: int, hashes: Sequence[bytes], whole: bool) -> list[bytes]:
    if m == len(hashes):
        return [] if whole else [mth(hashes)]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    if m <= k:
        return [*rfc_subproof(m, hashes[:k], whole), mth(hashes[k:])]
    return [*rfc_subproof(m - k, hashes[k:], False), mth(hashes[:k])]


def oracle(hashes: Sequence[bytes]) -> Callable[[int, int], bytes]:
    return lambda lo, hi: mth(hashes[lo:hi])


def perfect_oracle(hashes: Sequence[bytes], size: int) -> Callable[[int, int], bytes]:
    """Answers perfect subtrees inside the tree only, as the server's stored hashes do."""

    def perfect(level: int, index: int) -> bytes:
        lo, hi = index << level, (index + 1) << level
        assert hi <= size, f"asked for {level}/{index}, beyond the tree of size {size}"
        return mth(hashes[lo:hi])

    return perfect


def included(leaf: Any, index: Any, size: Any, path: Any, root: Any) -> bool:
    return inclusion_verify(leaf_hash=leaf, index=index, size=size, path=path, root=root)


def consistent(first: Any, second: Any, old: Any, new: Any, path: Any) -> bool:
    return consistency_verify(
        first=first, second=second, first_root=old, second_root=new, path=path
    )


def flipped(value: bytes, at: int) -> bytes:
    return value[:at] + bytes([value[at] ^ 0x01]) + value[at + 1 :]


LEAF_HASHES = [sha256(b"\x00" + index.to_bytes(4, "big")) for index in range(300)]

# The leaves, roots and proofs of transparency-dev/merkle proof/verify_test.go (from
# certificate-transparency-go), with its 1-based leaf numbers made 0-based indexes.
LEAVES = [
    bytes.fromhex(value)
    for value in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    bytes.fromhex(value)
    for value in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
INCLUSION_VECTORS = [
    (0, 8, ("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (5, 8, ("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 3, ("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",)),
    (1, 5, ("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (0, 1, ()),
]  # fmt: skip
CONSISTENCY_VECTORS = [
    (1, 1, ()),
    (1, 8, ("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, ("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, ("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, ("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
]  # fmt: skip

# The example of golang.org/x/mod/sumdb/note (note_test.go).
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqf"
    "qdngotpRZb6KE6RyyBwJnAM=\n"
)
GO_NOTE = GO_TEXT + "\n" + GO_SIGNATURE
GO_PUBLIC = base64.b64decode(GO_VERIFIER.split("+")[2])[1:]


# --- Merkle tree hashing -----------------------------------------------------------------


def test_hashes__are_rfc_9162_leaf_and_node_hashes() -> None:
    assert leaf_hash(b"entry") == sha256(b"\x00entry")
    assert node_hash(b"L" * 32, b"R" * 32) == sha256(b"\x01" + b"L" * 32 + b"R" * 32)
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_root__ct_vectors__every_size_matches() -> None:
    hashes = [leaf_hash(leaf) for leaf in LEAVES]
    frontier = Frontier()
    assert root_from_leaf_hashes([]) == frontier.root() == EMPTY_ROOT
    for size, expected in enumerate(ROOTS, start=1):
        frontier.append(hashes[size - 1])
        assert root_from_leaf_hashes(hashes[:size]) == expected, size
        assert frontier.root() == expected, size
        assert mth(hashes[:size]) == expected, size


def test_root__every_size_to_300__equals_the_rfc_recursion() -> None:
    for size in range(301):
        assert root_from_leaf_hashes(LEAF_HASHES[:size]) == mth(LEAF_HASHES[:size]), size


def test_root__a_million_leaves__equals_the_frontier_root() -> None:
    hashes = [index.to_bytes(32, "big") for index in range(1_000_000)]
    frontier = Frontier()
    for value in hashes:
        frontier.append(value)
    assert root_from_leaf_hashes(hashes) == frontier.root()
    assert frontier.size == 1_000_000
    assert len(frontier.to_list()) == bin(1_000_000).count("1")


# --- Frontier ------------------------------------------------------------------------------


def test_frontier__every_size_to_200__root_equals_the_tree_root() -> None:
    frontier = Frontier()
    for size in range(201):
        assert frontier.size == size
        assert frontier.root() == root_from_leaf_hashes(LEAF_HASHES[:size]), size
        assert frontier.root() == mth(LEAF_HASHES[:size]), size
        frontier.append(LEAF_HASHES[size])


def test_frontier__kept_and_restored__appends_as_if_never_stopped() -> None:
    for size in range(130):
        kept = Frontier()
        for value in LEAF_HASHES[:size]:
            kept.append(value)
        restored = Frontier.from_list(kept.size, kept.to_list())
        for value in LEAF_HASHES[size:140]:
            restored.append(value)
        assert restored.root() == mth(LEAF_HASHES[:140]), size


@pytest.mark.parametrize("size", [255, 256, 257, 1000, 1023, 1024, 1025, 4097, 12_345])
def test_frontier__larger_sizes__root_equals_the_tree_root(size: int) -> None:
    hashes = [sha256(index.to_bytes(4, "big")) for index in range(size)]
    frontier = Frontier()
    for value in hashes:
        frontier.append(value)
    assert frontier.root() == root_from_leaf_hashes(hashes)
    if size <= 1025:
        assert frontier.root() == mth(hashes)


def test_frontier__extend_in_pieces__same_root_as_appending_one_by_one() -> None:
    for first in range(0, 140, 7):
        extended = Frontier()
        extended.extend(LEAF_HASHES[:first])
        extended.extend(LEAF_HASHES[first:140])
        assert (extended.size, extended.root()) == (140, mth(LEAF_HASHES[:140])), first
    with pytest.raises(TransparencyError, match="leaf hash"):
        Frontier().extend([b"short"])


def test_frontier__append__returns_the_perfect_subtrees_it_completes() -> None:
    frontier = Frontier()
    seen: dict[tuple[int, int], bytes] = {}
    for index, value in enumerate(LEAF_HASHES[:70]):
        for level, node, hashed in frontier.append(value):
            lo, hi = node << level, (node + 1) << level
            assert hi == index + 1
            assert level >= 1
            assert hashed == mth(LEAF_HASHES[lo:hi])
            seen[(level, node)] = hashed
    assert set(seen) == {(level, node) for level in range(1, 7) for node in range(70 >> level)}


def test_frontier__from_list__refuses_a_wrong_shape() -> None:
    with pytest.raises(TransparencyError, match="a tree of 5 leaves has 2"):
        Frontier.from_list(5, [LEAF_HASHES[0]])
    with pytest.raises(TransparencyError, match="32 bytes"):
        Frontier.from_list(1, [b"short"])
    with pytest.raises(TransparencyError, match="count of leaves"):
        Frontier.from_list(-1, [])
    with pytest.raises(TransparencyError, match="32 bytes"):
        Frontier().append(b"short")


# --- Inclusion proofs ----------------------------------------------------------------------


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION_VECTORS)
def test_inclusion__ct_vectors__generated_and_verified(
    index: int, size: int, expected: tuple[str, ...]
) -> None:
    hashes = [leaf_hash(leaf) for leaf in LEAVES]
    path = inclusion_path(index=index, size=size, subtree=oracle(hashes[:size]))
    assert [value.hex() for value in path] == list(expected)
    assert inclusion_verify(
        leaf_hash=hashes[index], index=index, size=size, path=path, root=ROOTS[size - 1]
    )


def test_inclusion__every_index_and_size_to_64__is_the_rfc_path_and_verifies() -> None:
    for size in range(1, 65):
        tree = LEAF_HASHES[:size]
        root = mth(tree)
        from_perfect = perfect_oracle(tree, size)
        for index in range(size):
            path = inclusion_path(index=index, size=size, subtree=oracle(tree))
            assert path == rfc_path(index, tree), (index, size)
            assert path == inclusion_path(
                index=index,
                size=size,
                subtree=partial(subtree_hash, perfect=from_perfect),
            )
            assert inclusion_verify(
                leaf_hash=tree[index], index=index, size=size, path=path, root=root
            )


def test_inclusion__any_byte_flipped__fails() -> None:
    for size in range(1, 65):
        tree = LEAF_HASHES[:size]
        root = mth(tree)
        for index in range(size):
            path, leaf = rfc_path(index, tree), tree[index]
            for at in range(32):
                assert not included(flipped(leaf, at), index, size, path, root)
                assert not included(leaf, index, size, path, flipped(root, at))
                for element in range(len(path)):
                    bad = [*path[:element], flipped(path[element], at), *path[element + 1 :]]
                    assert not included(leaf, index, size, bad, root), (index, size, element, at)


def test_inclusion__wrong_index_size_or_path_length__fails() -> None:
    for size in range(1, 65):
        tree = LEAF_HASHES[:size]
        root = mth(tree)
        for index in range(size):
            path, leaf = rfc_path(index, tree), tree[index]
            assert included(leaf, index, size, path, root)
            assert not included(leaf, index + 1, size, path, root)
            assert not included(leaf, size, size, path, root)
            assert not included(leaf, index, size * 2, path, root)
            assert not included(leaf, index, size, [*path, root], root)
            assert not included(leaf, index, size, [root, *path], root)
            if index:
                assert not included(leaf, index - 1, size, path, root)
            if path:
                assert not included(leaf, index, size, path[:-1], root)
                assert not included(leaf, index, size // 2, path, root)


@pytest.mark.parametrize(
    ("index", "size", "path", "leaf", "root"),
    [
        (0, 0, [], b"\x00" * 32, EMPTY_ROOT),
        (1, 1, [], b"\x00" * 32, b"\x00" * 32),
        (-1, 1, [], b"\x00" * 32, b"\x00" * 32),
        ("0", 1, [], b"\x00" * 32, b"\x00" * 32),
        (True, 2, [b"\x00" * 32], b"\x00" * 32, b"\x00" * 32),
        (0, 1, None, b"\x00" * 32, b"\x00" * 32),
        (0, 1, "", b"\x00" * 32, b"\x00" * 32),
        (0, 2, ["00" * 32], b"\x00" * 32, b"\x00" * 32),
        (0, 2, [b"\x00" * 31], b"\x00" * 32, b"\x00" * 32),
        (0, 1, [], b"", b""),
        (0, 1, [], "00" * 32, "00" * 32),
        (0, 1, [], None, None),
    ],
)
def test_inclusion_verify__bad_input__false_without_raising(
    index: Any, size: Any, path: Any, leaf: Any, root: Any
) -> None:
    assert included(leaf, index, size, path, root) is False


def test_inclusion_path__index_outside_the_tree__refused() -> None:
    with pytest.raises(TransparencyError, match="index"):
        inclusion_path(index=3, size=3, subtree=oracle(LEAF_HASHES))
    with pytest.raises(TransparencyError, match="index"):
        inclusion_path(index=-1, size=3, subtree=oracle(LEAF_HASHES))


# --- Consistency proofs --------------------------------------------------------------------


@pytest.mark.parametrize(("first", "second", "expected"), CONSISTENCY_VECTORS)
def test_consistency__ct_vectors__generated_and_verified(
    first: int, second: int, expected: tuple[str, ...]
) -> None:
    hashes = [leaf_hash(leaf) for leaf in LEAVES]
    path = consistency_path(first=first, second=second, subtree=oracle(hashes[:second]))
    assert [value.hex() for value in path] == list(expected)
    assert consistency_verify(
        first=first,
        second=second,
        first_root=ROOTS[first - 1],
        second_root=ROOTS[second - 1],
        path=path,
    )


def test_consistency__every_pair_to_64__is_the_rfc_proof_and_verifies() -> None:
    for second in range(1, 65):
        tree = LEAF_HASHES[:second]
        from_perfect = perfect_oracle(tree, second)
        for first in range(1, second + 1):
            path = consistency_path(first=first, second=second, subtree=oracle(tree))
            assert path == rfc_subproof(first, tree, True), (first, second)
            assert path == consistency_path(
                first=first,
                second=second,
                subtree=partial(subtree_hash, perfect=from_perfect),
            )
            assert consistency_verify(
                first=first,
                second=second,
                first_root=mth(tree[:first]),
                second_root=mth(tree),
                path=path,
            ), (first, second)


def test_consistency__any_byte_flipped__fails() -> None:
    for second in range(1, 65):
        tree = LEAF_HASHES[:second]
        new = mth(tree)
        for first in range(1, second):
            old, path = mth(tree[:first]), rfc_subproof(first, tree, True)
            for at in range(32):
                assert not consistent(first, second, flipped(old, at), new, path)
                assert not consistent(first, second, old, flipped(new, at), path)
                for element in range(len(path)):
                    bad = [*path[:element], flipped(path[element], at), *path[element + 1 :]]
                    assert not consistent(first, second, old, new, bad), (first, second, element)


def test_consistency__wrong_sizes_or_path_length__fails() -> None:
    for second in range(2, 65):
        tree = LEAF_HASHES[:second]
        new = mth(tree)
        for first in range(1, second):
            old, path = mth(tree[:first]), rfc_subproof(first, tree, True)
            assert consistent(first, second, old, new, path)
            assert not consistent(first + 1, second, old, new, path)
            assert not consistent(first - 1, second, old, new, path)
            assert not consistent(first, second * 2, old, new, path)
            assert not consistent(first, second, new, old, path)
            assert not consistent(first, second, old, new, path[:-1])
            assert not consistent(first, second, old, new, [*path, new])
            assert not consistent(first, second, old, new, [old, *path])
            assert not consistent(first, second, old, new, [])


def test_consistency_verify__edge_cases() -> None:
    root, other = mth(LEAF_HASHES[:5]), mth(LEAF_HASHES[:6])

    assert consistent(5, 5, root, root, [])
    assert consistent(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not consistent(5, 5, root, other, [])
    assert not consistent(5, 5, root, root, [root])
    assert not consistent(0, 6, EMPTY_ROOT, other, [])
    assert not consistent(0, 6, EMPTY_ROOT, other, [other])
    assert not consistent(6, 5, other, root, [])
    assert not consistent(-1, 5, root, root, [])
    assert not consistent(5, "5", root, root, [])
    assert not consistent(5, 6, root, other, None)
    assert not consistent(5, 6, root, other, [b"short"])
    assert not consistent(5, 6, root.hex(), other, [LEAF_HASHES[5]])


def test_consistency_path__from_an_empty_tree_or_backwards__refused() -> None:
    with pytest.raises(TransparencyError, match="first"):
        consistency_path(first=0, second=4, subtree=oracle(LEAF_HASHES))
    with pytest.raises(TransparencyError, match="first"):
        consistency_path(first=5, second=4, subtree=oracle(LEAF_HASHES))


def test_subtree_hash__asks_only_for_perfect_subtrees_and_refuses_unaligned_ranges() -> None:
    asked: list[tuple[int, int]] = []

    def perfect(level: int, index: int) -> bytes:
        asked.append((level, index))
        return mth(LEAF_HASHES[index << level : (index + 1) << level])

    assert subtree_hash(8, 15, perfect) == mth(LEAF_HASHES[8:15])
    assert asked == [(2, 2), (1, 6), (0, 14)]
    assert subtree_hash(0, 0, perfect) == EMPTY_ROOT
    with pytest.raises(TransparencyError, match=r"\[2, 7\) is not a subtree"):
        subtree_hash(2, 7, perfect)
    with pytest.raises(TransparencyError, match="not a range"):
        subtree_hash(5, 4, perfect)


# --- Signed notes --------------------------------------------------------------------------


def test_note_sign__go_example__byte_for_byte() -> None:
    assert note_sign(GO_TEXT, GO_SIGNER) == GO_NOTE
    assert verifier_key_for(GO_SIGNER) == GO_VERIFIER


def test_note_verify__go_example__returns_the_text() -> None:
    assert note_verify(GO_NOTE, GO_VERIFIER) == GO_TEXT


def test_note_verify__tampered_text__does_not_verify() -> None:
    tampered = GO_NOTE.replace("cryptography", "cryptographY")
    with pytest.raises(TransparencyError, match=r"signature by PeterNeumann\+c74f20a3 does not"):
        note_verify(tampered, GO_VERIFIER)


def test_note_verify__another_key_of_the_same_name__no_signature_by_it() -> None:
    impostor = verifier_key_for(signer_key_generate("PeterNeumann"))
    with pytest.raises(TransparencyError, match="no signature by the key PeterNeumann"):
        note_verify(GO_NOTE, impostor)


def test_note_verify__signed_by_another_key_only__no_signature_by_this_one() -> None:
    other = signer_key_generate("example.com/other")
    with pytest.raises(TransparencyError, match=r"no signature by the key PeterNeumann\+c74f20a3"):
        note_verify(note_sign(GO_TEXT, other), GO_VERIFIER)


def test_note_verify__other_keys_signatures__ignored() -> None:
    other_line = note_sign(GO_TEXT, signer_key_generate("witness.example")).split("\n\n")[-1]
    garbage_line = "\u2014 unknown.example " + base64.b64encode(b"\x01" * 68).decode() + "\n"
    for lines in (other_line + GO_SIGNATURE, GO_SIGNATURE + garbage_line + other_line):
        assert note_verify(GO_TEXT + "\n" + lines, GO_VERIFIER) == GO_TEXT


def test_note_verify__a_second_bad_signature_by_the_key__rejected() -> None:
    blob = bytearray(base64.b64decode(GO_SIGNATURE.split(" ")[-1]))
    blob[10] ^= 1
    bad_line = "\u2014 PeterNeumann " + base64.b64encode(bytes(blob)).decode() + "\n"
    with pytest.raises(TransparencyError, match="does not verify"):
        note_verify(GO_NOTE + bad_line, GO_VERIFIER)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("PeterNeumann+c74f20a3", "missing or not base64"),
        ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 hex digits"),
        (
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "not that of the key",
        ),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "the name"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "the name"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "not base64"),
        (
            GO_VERIFIER[:22] + base64.b64encode(b"\x02" + GO_PUBLIC).decode(),
            "algorithm 2 is not Ed25519",
        ),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWAA==", "32 bytes"),
        (GO_SIGNER, "8 hex digits"),
    ],
)
def test_note_verify__malformed_key__says_why(key: str, reason: str) -> None:
    with pytest.raises(TransparencyError, match=f"verifier key is malformed: .*{reason}"):
        note_verify(GO_NOTE, key)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (GO_VERIFIER, "PRIVATE\\+KEY\\+"),
        (GO_SIGNER.replace("c74f20a3", "c74f20a4"), "not that of the key"),
        (GO_SIGNER[:-1], "not base64"),
        (GO_SIGNER[:-4], "32 bytes"),
    ],
)
def test_note_sign__malformed_signer_key__says_why_without_quoting_it(
    key: str, reason: str
) -> None:
    with pytest.raises(TransparencyError, match=f"signer key is malformed: .*{reason}") as caught:
        note_sign(GO_TEXT, key)
    assert "AYEKFALVFGyNhPJEMzD1QIDr" not in str(caught.value)


@pytest.mark.parametrize(
    ("note", "reason"),
    [
        (GO_TEXT + GO_SIGNATURE, "no empty line"),
        (GO_NOTE.rstrip("\n"), "do not end in a newline"),
        (GO_NOTE + "\n", "no signature after the last empty line"),
        (GO_NOTE + "junk\n", "signature line 2 does not begin with an em dash"),
        (GO_TEXT + "\n- PeterNeumann x08go/ZJkuBS9U=\n", "signature line 1 does not begin"),
        (GO_TEXT + "\n\u2014 PeterNeumann\n", "not a key name and a base64 signature"),
        (GO_TEXT + "\n\u2014 PeterNeumann AAAA\n", "not a key name and a base64 signature"),
        (GO_TEXT + "\n\u2014 Peter+Neumann x08go/ZJkuBS9UG/Sf\n", "not a key name"),
        (GO_NOTE.replace("problem,", "problem,\t"), "control character"),
        (GO_NOTE.replace("problem,", "problem,\ud800"), "UTF-8"),
        (GO_NOTE + GO_SIGNATURE * 100, "101 signatures"),
    ],
)
def test_note_verify__malformed_note__says_why(note: str, reason: str) -> None:
    with pytest.raises(TransparencyError, match=f"signed note is malformed: .*{reason}"):
        note_verify(note, GO_VERIFIER)


def test_note__text_with_empty_lines__round_trips() -> None:
    key = signer_key_generate("example.com/log")
    text = "first\n\nthird\n"
    note = note_sign(text, key)
    assert note_verify(note, verifier_key_for(key)) == text


@pytest.mark.parametrize(
    ("text", "reason"), [("no newline", "end in a newline"), ("tab\there\n", "control")]
)
def test_note_sign__text_not_allowed__refused(text: str, reason: str) -> None:
    with pytest.raises(TransparencyError, match=reason):
        note_sign(text, GO_SIGNER)


def test_signer_key_generate__makes_a_go_shaped_pair() -> None:
    signer = signer_key_generate("escapement.local/audit")
    verifier = verifier_key_for(signer)
    name, key_id, encoded = verifier.split("+", 2)
    public = base64.b64decode(encoded)
    assert signer.startswith("PRIVATE+KEY+escapement.local/audit+" + key_id + "+")
    assert name == "escapement.local/audit"
    assert public[0] == 1
    assert len(public) == 33
    assert key_id == sha256(name.encode() + b"\n" + public)[:4].hex()
    assert note_verify(note_sign("hello\n", signer), verifier) == "hello\n"


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\tname", "nbsp\u00a0name", "\ud800"])
def test_signer_key_generate__bad_name__refused(name: str) -> None:
    with pytest.raises(TransparencyError, match="key name"):
        signer_key_generate(name)


# --- Checkpoints ---------------------------------------------------------------------------


def test_checkpoint__body__is_the_c2sp_text_and_parses_back() -> None:
    checkpoint = Checkpoint(
        origin="example.com/log", size=5, root_hash=ROOTS[4], extensions=("extra one",)
    )
    body = checkpoint_body(checkpoint)
    assert body == "example.com/log\n5\nTju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=\nextra one\n"
    assert checkpoint_parse(body) == checkpoint
    empty = Checkpoint(origin="o", size=0, root_hash=EMPTY_ROOT)
    assert checkpoint_parse(checkpoint_body(empty)) == empty


ROOT_B64 = base64.b64encode(ROOTS[0]).decode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"o\n1\n{ROOT_B64}", "does not end in a newline"),
        ("o\n1\n", "2 line"),
        (f"\n1\n{ROOT_B64}\n", "line 1 \\(origin\\): empty"),
        (f"o\n01\n{ROOT_B64}\n", "line 2 \\(size\\): '01'"),
        (f"o\n-1\n{ROOT_B64}\n", "line 2 \\(size\\)"),
        (f"o\n\n{ROOT_B64}\n", "line 2 \\(size\\)"),
        (f"o\n 1\n{ROOT_B64}\n", "line 2 \\(size\\)"),
        (f"o\n\u0661\n{ROOT_B64}\n", "line 2 \\(size\\)"),
        ("o\n1\nnot base64!\n", "line 3 \\(root hash\\)"),
        (f"o\n1\n{base64.b64encode(b'x' * 31).decode()}\n", "line 3 \\(root hash\\)"),
        (f"o\n1\n{ROOT_B64.rstrip('=')}\n", "line 3 \\(root hash\\)"),
        (f"o\n1\n{ROOT_B64}\n\n", "line 4 \\(extension\\): empty"),
        (f"o\n1\n{ROOT_B64}\nfine\n\n", "line 5 \\(extension\\): empty"),
    ],
)
def test_checkpoint_parse__bad_line__named_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(TransparencyError, match=reason):
        checkpoint_parse(text)


@pytest.mark.parametrize(
    ("checkpoint", "field"),
    [
        (Checkpoint(origin="", size=1, root_hash=ROOTS[0]), "origin"),
        (Checkpoint(origin="a\nb", size=1, root_hash=ROOTS[0]), "origin"),
        (Checkpoint(origin="o", size=-1, root_hash=ROOTS[0]), "size"),
        (Checkpoint(origin="o", size=1, root_hash=b"short"), "root_hash"),
        (Checkpoint(origin="o", size=1, root_hash=ROOTS[0], extensions=("",)), "extension 1"),
    ],
)
def test_checkpoint_body__bad_field__refused(checkpoint: Checkpoint, field: str) -> None:
    with pytest.raises(TransparencyError, match=f"checkpoint {field}"):
        checkpoint_body(checkpoint)


# --- Entries -------------------------------------------------------------------------------

SMALL_ENTRY: dict[str, Any] = {
    "event_id": 1,
    "created_at_us": 2,
    "actor_type": "user",
    "actor": "alice",
    "verb": "a.b",
    "target_type": "",
    "target_id": "\u00e9",
    "subject": "",
    "trace_id": "",
    "payload_digest": "00",
}


def test_entry_encode__small_example__exact_bytes() -> None:
    assert entry_encode(**SMALL_ENTRY).hex() == (
        "01"
        "0000000000000001"
        "0000000000000002"
        "00000004" + b"user".hex() + "00000005" + b"alice".hex() + "00000003" + b"a.b".hex()
        + "00000000"
        "00000002" "c3a9"
        "00000000"
        "00000000"
        "00000002" "3030"
    )  # fmt: skip


def test_entry__round_trip__including_extremes() -> None:
    assert entry_decode(entry_encode(**SMALL_ENTRY)) == SMALL_ENTRY
    wide = {
        **SMALL_ENTRY,
        "event_id": -(2**63),
        "created_at_us": 2**63 - 1,
        "actor": "agent:r\u00e9fund-bot \U0001f916",
        "payload_digest": "ab" * 32,
        "trace_id": "x" * 70_000,
    }
    encoded = entry_encode(**wide)
    assert encoded[1:9] == b"\x80" + b"\x00" * 7
    assert entry_decode(encoded) == wide


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter than its 17-byte head"),
        (b"\x02" + bytes(16) + bytes(32), "version 2"),
        (entry_encode(**SMALL_ENTRY) + b"\x00", "1 bytes after payload_digest"),
        (entry_encode(**SMALL_ENTRY)[:-1], "payload_digest: 2 bytes long, 1 left"),
        (entry_encode(**SMALL_ENTRY)[:19], "actor_type: cut short"),
        (entry_encode(**{**SMALL_ENTRY, "verb": "\u00e9"}).replace(b"\xc3\xa9", b"\xc3\x28", 1),
         "verb: not valid UTF-8"),
    ],
)  # fmt: skip
def test_entry_decode__bad_data__says_why(data: bytes, reason: str) -> None:
    with pytest.raises(TransparencyError, match=reason):
        entry_decode(data)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_id": 2**63}, "event_id"),
        ({"created_at_us": -(2**63) - 1}, "created_at_us"),
        ({"event_id": True}, "event_id"),
        ({"verb": None}, "verb"),
        ({"subject": "\ud800"}, "subject"),
    ],
)
def test_entry_encode__bad_field__refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(TransparencyError, match=f"entry {reason}"):
        entry_encode(**{**SMALL_ENTRY, **change})


# --- Proof documents -----------------------------------------------------------------------

LOG_SIGNER = signer_key_generate("example.com/audit")
LOG_VERIFIER = verifier_key_for(LOG_SIGNER)


def canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def log_events(count: int) -> list[tuple[dict[str, Any], str]]:
    events = []
    for number in range(count):
        payload = canonical({"amount_cents": 100 * number, "order": f"100{number}"})
        fields = {
            **SMALL_ENTRY,
            "event_id": 40 + number,
            "created_at_us": 1_767_225_600_000_000 + number,
            "verb": "action.approved",
            "target_type": "actions.action",
            "target_id": f"order:{number}",
            "payload_digest": hashlib.sha256(payload.encode()).hexdigest(),
        }
        events.append((fields, payload))
    return events


def proof_document(
    *, size: int, indexes: Sequence[int], signer: str = LOG_SIGNER
) -> dict[str, Any]:
    """A document as the server answers it, built from this module's functions."""
    events = log_events(size)
    entries = [entry_encode(**fields) for fields, _ in events]
    hashes = [leaf_hash(entry) for entry in entries]
    root = root_from_leaf_hashes(hashes)
    body = checkpoint_body(Checkpoint(origin="example.com/audit", size=size, root_hash=root))
    return {
        "checkpoint": note_sign(body, signer),
        "tree_size": size,
        "root_hash": root.hex(),
        "events": [
            {
                "leaf_index": index,
                "leaf_hash": hashes[index].hex(),
                "entry": base64.b64encode(entries[index]).decode(),
                "audit_path": [
                    value.hex()
                    for value in inclusion_path(index=index, size=size, subtree=oracle(hashes))
                ],
                "tree_size": size,
                "root_hash": root.hex(),
                "payload_canonical": events[index][1],
                "event": events[index][0],
            }
            for index in indexes
        ],
        "pending": [],
    }


def test_proof_verify__document_of_the_server__returns_the_entries() -> None:
    document = proof_document(size=7, indexes=[2, 6])
    entries = proof_verify(document, LOG_VERIFIER)
    assert entries == [log_events(7)[2][0], log_events(7)[6][0]]


def test_proof_verify__without_payload__checks_the_rest() -> None:
    document = proof_document(size=7, indexes=[3])
    document["events"][0]["payload_canonical"] = None
    del document["events"][0]["event"]
    assert proof_verify(document, LOG_VERIFIER)[0]["target_id"] == "order:3"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _other_entry(document: dict[str, Any]) -> None:
    fields = {**document["events"][1]["event"], "verb": "action.denied"}
    document["events"][1]["entry"] = base64.b64encode(entry_encode(**fields)).decode()


def _flip_path(document: dict[str, Any]) -> None:
    path = document["events"][1]["audit_path"]
    path[1] = flipped(bytes.fromhex(path[1]), 5).hex()


def _other_checkpoint_text(document: dict[str, Any]) -> None:
    document["checkpoint"] = document["checkpoint"].replace("\n7\n", "\n8\n", 1)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_other_checkpoint_text, "proof checkpoint: signed note: the signature by .* does not"),
        (_set("checkpoint", None), "proof checkpoint: not a signed note"),
        (_set("events", []), "proof events: none"),
        (_set("events.1", "x"), "proof event 1: not an object"),
        (_set("events.1.leaf_index", 5), "proof event 1 audit_path: does not prove leaf 5"),
        (_set("events.1.leaf_index", -1), "proof event 1 leaf_index"),
        (_set("events.1.leaf_hash", "00" * 32), "proof event 1 leaf_hash: not the hash"),
        (_set("events.1.leaf_hash", "zz"), "proof event 1 leaf_hash: not 32 bytes in hex"),
        (_other_entry, "proof event 1 leaf_hash: not the hash of the entry"),
        (_set("events.1.entry", "!!"), "proof event 1 entry: not base64"),
        (_set("events.1.entry", "AQ=="), "proof event 1 entry: shorter"),
        (_set("events.1.tree_size", 8), "proof event 1 tree_size: 8, the checkpoint's is 7"),
        (_set("events.1.root_hash", "11" * 32), "proof event 1 root_hash: not the checkpoint's"),
        (_flip_path, "proof event 1 audit_path: does not prove leaf 6"),
        (_set("events.1.audit_path", []), "proof event 1 audit_path: does not prove"),
        (_set("events.1.audit_path", "ab"), "proof event 1 audit_path: not a list"),
        (_set("events.1.payload_canonical", '{"amount_cents":1}'), "proof event 1 payload_can"),
        (_set("events.1.event.verb", "action.denied"), "proof event 1 event.verb"),
        (_set("events.0.event.event_id", 1), "proof event 0 event.event_id"),
    ],
)
def test_proof_verify__one_field_tampered__fails_naming_it(
    tamper: Callable[[dict[str, Any]], None], reason: str
) -> None:
    document = proof_document(size=7, indexes=[2, 6])
    tamper(document)
    with pytest.raises(TransparencyError, match=reason):
        proof_verify(document, LOG_VERIFIER)


def test_proof_verify__signed_by_another_key__fails() -> None:
    document = proof_document(size=7, indexes=[2], signer=signer_key_generate("example.com/audit"))
    with pytest.raises(TransparencyError, match=r"no signature by the key example\.com/audit"):
        proof_verify(document, LOG_VERIFIER)


def test_proof_verify__every_leaf_of_every_size_to_20__verifies() -> None:
    for size in range(1, 21):
        document = proof_document(size=size, indexes=range(size))
        assert len(proof_verify(copy.deepcopy(document), LOG_VERIFIER)) == size


# --- Command line --------------------------------------------------------------------------


def test_cli_verify_proof__good_document__exit_0_one_line_per_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(proof_document(size=7, indexes=[2, 6])))
    key_file = tmp_path / "log.pub"
    key_file.write_text(LOG_VERIFIER + "\n")
    for key in (LOG_VERIFIER, str(key_file)):
        assert main(["verify-proof", str(proof_file), "--key", key]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[-1] == "ok"
        assert lines[0] == (
            "event 42 at 2026-01-01T00:00:00.000002+00:00: user:alice action.approved"
            " actions.action:order:2 is leaf 2 of example.com/audit at size 7"
        )
        assert len(lines) == 3


def test_cli_verify_proof__tampered_or_unreadable__exit_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = proof_document(size=7, indexes=[2, 6])
    _flip_path(document)
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(document))
    assert main(["verify-proof", str(proof_file), "--key", LOG_VERIFIER]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "proof event 1 audit_path: does not prove leaf 6" in captured.err
    assert main(["verify-proof", str(tmp_path / "missing.json"), "--key", LOG_VERIFIER]) == 1
    assert "missing.json" in capsys.readouterr().err
    proof_file.write_text("{not json")
    assert main(["verify-proof", str(proof_file), "--key", LOG_VERIFIER]) == 1


def _consistency_files(tmp_path: Path, *, first: int, second: int) -> tuple[Path, Path, Path]:
    entries = [entry_encode(**fields) for fields, _ in log_events(second)]
    hashes = [leaf_hash(entry) for entry in entries]
    notes = []
    for size in (first, second):
        root = root_from_leaf_hashes(hashes[:size])
        body = checkpoint_body(Checkpoint(origin="example.com/audit", size=size, root_hash=root))
        notes.append(note_sign(body, LOG_SIGNER))
    old, new, proof = tmp_path / "old.note", tmp_path / "new.note", tmp_path / "proof.json"
    old.write_text(notes[0] + "\n")
    new.write_text(notes[1])
    path = consistency_path(first=first, second=second, subtree=oracle(hashes))
    proof.write_text(
        json.dumps({"first": first, "second": second, "proof": [value.hex() for value in path]})
    )
    return old, new, proof


def test_cli_consistency__extending_checkpoint__exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, proof = _consistency_files(tmp_path, first=3, second=7)
    assert main(["consistency", str(old), str(new), str(proof), "--key", LOG_VERIFIER]) == 0
    assert capsys.readouterr().out == (
        "example.com/audit: the tree of size 3 is a prefix of size 7\nok\n"
    )


def test_cli_consistency__bad_proof_or_sizes_or_key__exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, proof = _consistency_files(tmp_path, first=3, second=7)
    args = ["consistency", str(old), str(new), str(proof), "--key", LOG_VERIFIER]
    document = json.loads(proof.read_text())

    proof.write_text(json.dumps({**document, "proof": document["proof"][::-1]}))
    assert main(args) == 1
    assert "does not show the tree of size 3 is a prefix" in capsys.readouterr().err

    proof.write_text(json.dumps({**document, "first": 4}))
    assert main(args) == 1
    assert "from 4 to 7, the checkpoints are of sizes 3 and 7" in capsys.readouterr().err

    proof.write_text(json.dumps(document))
    assert main(["consistency", str(new), str(old), str(proof), "--key", LOG_VERIFIER]) == 1
    assert "from 3 to 7, the checkpoints are of sizes 7 and 3" in capsys.readouterr().err

    other_key = verifier_key_for(signer_key_generate("example.com/audit"))
    assert main([*args[:-1], other_key]) == 1
    assert "no signature by the key example.com/audit" in capsys.readouterr().err

    other_log = Checkpoint(origin="example.com/other", size=7, root_hash=ROOTS[0])
    new.write_text(note_sign(checkpoint_body(other_log), LOG_SIGNER))
    assert main(args) == 1
    assert "of two logs" in capsys.readouterr().err
