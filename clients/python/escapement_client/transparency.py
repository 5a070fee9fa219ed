"""Check that a decision is in Escapement's audit log, with this file and `cryptography` alone.

The audit log is a transparency log in the formats such logs share: RFC 9162 Merkle tree hashes
and proofs, C2SP tlog-checkpoint checkpoints, C2SP signed notes with Ed25519 keys written as
golang.org/x/mod/sumdb/note writes them. The server imports this module to build its hashes and
notes, so that what it writes and what an auditor checks come from one implementation.

    python -m escapement_client.transparency verify-proof proof.json --key log.pub
    python -m escapement_client.transparency consistency old.note new.note proof.json --key log.pub
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import struct
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Entry = dict[str, int | str]

# Spelled out rather than datetime.UTC, which the client's oldest Python (3.10) lacks.
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


class TransparencyError(ValueError):
    """Input the formats do not allow, or a proof or signature that does not hold. The message
    names the part at fault and the reason, so that an auditor can tell what failed."""


# --- Merkle tree hashing (RFC 9162, 2.1.1) ---------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, a level at a time: pairing nodes from the left and carrying a lone
    last node up unchanged builds the very tree that RFC 9162 builds by splitting at the largest
    power of two, without recursion."""
    if not hashes:
        return EMPTY_ROOT
    sha256 = hashlib.sha256
    level = hashes
    while len(level) > 1:
        pairs = iter(level)
        above = [
            sha256(b"\x01" + left + right).digest()
            for left, right in zip(pairs, pairs, strict=False)
        ]
        if len(level) % 2:
            above.append(level[-1])
        level = above
    return level[0]


class Frontier:
    """The hashes of the maximal perfect subtrees of a tree of `size` leaves, largest first (at
    most log2(size) of them): all a sequencer needs to keep between runs to append leaves and
    compute the new root without reading old leaves again."""

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_list(cls, size: int, hashes: Sequence[bytes]) -> Frontier:
        if not _is_count(size):
            raise TransparencyError(f"frontier size: {size!r} is not a count of leaves")
        if len(hashes) != size.bit_count():
            raise TransparencyError(
                f"frontier hashes: a tree of {size} leaves has {size.bit_count()}, "
                f"got {len(hashes)}"
            )
        if not all(_is_hash(value) for value in hashes):
            raise TransparencyError(f"frontier hashes: each must be {HASH_SIZE} bytes")
        frontier = cls()
        frontier._size = size
        frontier._hashes = list(hashes)
        return frontier

    @property
    def size(self) -> int:
        return self._size

    def to_list(self) -> list[bytes]:
        return list(self._hashes)

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf. Returns the perfect subtrees it completes above itself, as (level, index,
        hash) with leaves [index * 2^level, (index + 1) * 2^level), for a log that keeps them to
        answer proofs."""
        if not _is_hash(leaf_hash):
            raise TransparencyError(f"leaf hash: must be {HASH_SIZE} bytes")
        completed: list[tuple[int, int, bytes]] = []
        value, level, index = leaf_hash, 0, self._size
        while index & 1:
            value = node_hash(self._hashes.pop(), value)
            level, index = level + 1, index >> 1
            completed.append((level, index, value))
        self._hashes.append(value)
        self._size += 1
        return completed

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Add many leaves, keeping no completed subtree: the fast way for a verifier."""
        hashes, size, sha256 = self._hashes, self._size, hashlib.sha256
        for value in leaf_hashes:
            if len(value) != HASH_SIZE:
                raise TransparencyError(f"leaf hash: must be {HASH_SIZE} bytes")
            index = size
            while index & 1:
                value = sha256(b"\x01" + hashes.pop() + value).digest()
                index >>= 1
            hashes.append(value)
            size += 1
        self._size = size

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        value = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            value = node_hash(left, value)
        return value


# --- Proofs (RFC 9162, 2.1.3 and 2.1.4) ------------------------------------------------------


def _split(width: int) -> int:
    """The largest power of two smaller than `width` (> 1): where RFC 9162 splits a tree."""
    return 1 << ((width - 1).bit_length() - 1)


def subtree_hash(lo: int, hi: int, perfect: Callable[[int, int], bytes]) -> bytes:
    """MTH(D[lo:hi]) from an oracle that knows perfect subtrees only: `perfect(level, index)` is
    the hash of leaves [index * 2^level, (index + 1) * 2^level). Every range that RFC 9162's
    recursion visits splits into such subtrees, so a log need keep nothing else."""
    if not (_is_count(lo) and _is_count(hi)) or lo > hi:
        raise TransparencyError(f"subtree: [{lo!r}, {hi!r}) is not a range of leaves")
    if lo == hi:
        return EMPTY_ROOT
    unaligned = TransparencyError(f"subtree: [{lo}, {hi}) is not a subtree of a Merkle tree")
    lefts: list[bytes] = []
    while (width := hi - lo) & (width - 1):
        step = _split(width)
        if lo % step:
            raise unaligned
        lefts.append(perfect(step.bit_length() - 1, lo // step))
        lo += step
    if lo % width:
        raise unaligned
    value = perfect(width.bit_length() - 1, lo // width)
    for left in reversed(lefts):
        value = node_hash(left, value)
    return value


def inclusion_path(*, index: int, size: int, subtree: Callable[[int, int], bytes]) -> list[bytes]:
    """RFC 9162's PATH(index, D[0:size]), lowest level first; `subtree(lo, hi)` is MTH(D[lo:hi])."""
    if not (_is_count(index) and _is_count(size)) or index >= size:
        raise TransparencyError(f"index: {index!r} is not a leaf of a tree of size {size!r}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        middle = lo + _split(hi - lo)
        if index < middle:
            path.append(subtree(middle, hi))
            hi = middle
        else:
            path.append(subtree(lo, middle))
            lo = middle
    path.reverse()
    return path


def consistency_path(
    *, first: int, second: int, subtree: Callable[[int, int], bytes]
) -> list[bytes]:
    """RFC 9162's PROOF(first, D[0:second]): empty when the sizes are equal. An empty tree is a
    prefix of every tree, which no proof can show, so `first` must be at least 1."""
    if not (_is_count(first) and _is_count(second)) or not 0 < first <= second:
        raise TransparencyError(
            f"first: must be at least 1 and at most second ({second!r}), got {first!r}"
        )
    path: list[bytes] = []
    lo, hi, count, whole = 0, second, first, True
    while count != hi - lo:
        middle = lo + _split(hi - lo)
        if lo + count <= middle:
            path.append(subtree(middle, hi))
            hi = middle
        else:
            path.append(subtree(lo, middle))
            count -= middle - lo
            lo, whole = middle, False
    if not whole:
        path.append(subtree(lo, hi))
    path.reverse()
    return path


def inclusion_verify(
    *, leaf_hash: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162, 2.1.3.2. False, never an exception, for any input that is not a proof."""
    hashes = _hash_list(path)
    if hashes is None or not (_is_hash(leaf_hash) and _is_hash(root)):
        return False
    if not (_is_count(index) and _is_count(size)) or index >= size:
        return False
    fn, sn, value = index, size - 1, leaf_hash
    for sibling in hashes:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            value = node_hash(sibling, value)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            value = node_hash(value, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and value == root


def consistency_verify(
    *, first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162, 2.1.4.2. Equal sizes are consistent with an empty path and equal roots; from an
    empty tree nothing is provable. False, never an exception, for any input that is not a proof."""
    hashes = _hash_list(path)
    if hashes is None or not (_is_hash(first_root) and _is_hash(second_root)):
        return False
    if not (_is_count(first) and _is_count(second)) or first > second:
        return False
    if first == second:
        return not hashes and first_root == second_root
    if first == 0 or not hashes:
        return False
    if first & (first - 1) == 0:
        hashes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = hashes[0]
    for sibling in hashes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(sibling, fr)
            sr = node_hash(sibling, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _hash_list(path: object) -> list[bytes] | None:
    if not isinstance(path, Sequence) or isinstance(path, str | bytes | bytearray):
        return None
    hashes = list(path)
    return hashes if all(_is_hash(value) for value in hashes) else None


# --- Checkpoints (C2SP tlog-checkpoint) ------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A log's size and root hash at one moment: the text of a signed note."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()


_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def checkpoint_body(cp: Checkpoint) -> str:
    if not cp.origin or "\n" in cp.origin:
        raise TransparencyError("checkpoint origin: must be one non-empty line")
    if not _is_count(cp.size):
        raise TransparencyError(f"checkpoint size: {cp.size!r} is not a count of leaves")
    if not _is_hash(cp.root_hash):
        raise TransparencyError(f"checkpoint root_hash: must be {HASH_SIZE} bytes")
    for number, line in enumerate(cp.extensions, start=1):
        if not line or "\n" in line:
            raise TransparencyError(f"checkpoint extension {number}: must be one non-empty line")
    root = base64.b64encode(cp.root_hash).decode("ascii")
    return "".join(f"{line}\n" for line in (cp.origin, str(cp.size), root, *cp.extensions))


def checkpoint_parse(text: str) -> Checkpoint:
    if not text.endswith("\n"):
        raise TransparencyError("checkpoint: the text does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise TransparencyError(
            f"checkpoint: {len(lines)} line(s); origin, size and root hash are needed"
        )
    origin, size, root, *extensions = lines
    if not origin:
        raise TransparencyError("checkpoint line 1 (origin): empty")
    if not _DECIMAL.fullmatch(size):
        raise TransparencyError(
            f"checkpoint line 2 (size): {size!r} is not a decimal number without leading zeros"
        )
    root_hash = _b64decode(root)
    if root_hash is None or len(root_hash) != HASH_SIZE:
        raise TransparencyError(
            f"checkpoint line 3 (root hash): {root!r} is not the base64 of {HASH_SIZE} bytes"
        )
    for number, line in enumerate(extensions, start=4):
        if not line:
            raise TransparencyError(f"checkpoint line {number} (extension): empty")
    return Checkpoint(
        origin=origin, size=int(size), root_hash=root_hash, extensions=tuple(extensions)
    )


def _b64decode(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


# --- Signed notes (C2SP signed-note, Ed25519) ------------------------------------------------

_ED25519 = 0x01
_SIGNATURE_PREFIX = "\u2014 "
_MAX_SIGNATURES = 100
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")


@dataclass(frozen=True)
class _Key:
    name: str
    key_id: bytes
    material: bytes

    @property
    def label(self) -> str:
        return f"{self.name}+{self.key_id.hex()}"


def _utf8(text: str) -> bytes | None:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


def _name_valid(name: str) -> bool:
    return (
        bool(name)
        and "+" not in name
        and not any(char.isspace() for char in name)
        and not _CONTROL.search(name)
        and _utf8(name) is not None
    )


def _key_id(name: str, public_key: bytes) -> bytes:
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([_ED25519]) + public_key)
    return digest.digest()[:4]


def _key_text(name: str, key_id: bytes, material: bytes) -> str:
    return f"{name}+{key_id.hex()}+{base64.b64encode(bytes([_ED25519]) + material).decode()}"


def _key_parse(text: object, *, what: str) -> _Key:
    """name+keyid+base64(0x01 || 32 bytes), the shape shared by verifier and signer keys. The
    messages never quote the key: it may be a private one."""
    if not isinstance(text, str):
        raise TransparencyError(f"{what} is malformed: not text")
    name, _, rest = text.partition("+")
    key_id, _, encoded = rest.partition("+")
    if not _name_valid(name):
        raise TransparencyError(
            f"{what} is malformed: the name is empty or has a space, a '+' or a control character"
        )
    if not _KEY_ID.fullmatch(key_id):
        raise TransparencyError(f"{what} is malformed: the key id is not 8 hex digits")
    material = _b64decode(encoded)
    if not material:
        raise TransparencyError(f"{what} is malformed: the key is missing or not base64")
    if material[0] != _ED25519:
        raise TransparencyError(f"{what} is malformed: algorithm {material[0]} is not Ed25519 (1)")
    if len(material) != 1 + 32:
        raise TransparencyError(f"{what} is malformed: an Ed25519 key is 32 bytes")
    return _Key(name=name, key_id=bytes.fromhex(key_id), material=material[1:])


def _verifier_parse(verifier_key: str) -> tuple[_Key, Ed25519PublicKey]:
    key = _key_parse(verifier_key, what="verifier key")
    if _key_id(key.name, key.material) != key.key_id:
        raise TransparencyError("verifier key is malformed: the key id is not that of the key")
    try:
        return key, Ed25519PublicKey.from_public_bytes(key.material)
    except ValueError:
        raise TransparencyError("verifier key is malformed: not an Ed25519 public key") from None


def _signer_parse(signer_key: str) -> tuple[_Key, Ed25519PrivateKey]:
    if not isinstance(signer_key, str) or not signer_key.startswith("PRIVATE+KEY+"):
        raise TransparencyError("signer key is malformed: it does not begin with PRIVATE+KEY+")
    key = _key_parse(signer_key.removeprefix("PRIVATE+KEY+"), what="signer key")
    private = Ed25519PrivateKey.from_private_bytes(key.material)
    if _key_id(key.name, private.public_key().public_bytes_raw()) != key.key_id:
        raise TransparencyError("signer key is malformed: the key id is not that of the key")
    return key, private


def signer_key_generate(name: str) -> str:
    """A new Ed25519 signer key, PRIVATE+KEY+<name>+<key id>+<base64 of 0x01 and the seed>."""
    if not isinstance(name, str) or not _name_valid(name):
        raise TransparencyError(
            f"key name: {name!r} is empty or has a space, a '+' or a control character"
        )
    private = Ed25519PrivateKey.generate()
    key_id = _key_id(name, private.public_key().public_bytes_raw())
    return "PRIVATE+KEY+" + _key_text(name, key_id, private.private_bytes_raw())


def verifier_key_for(signer_key: str) -> str:
    """The public half of a signer key, <name>+<key id>+<base64 of 0x01 and the public key>."""
    key, private = _signer_parse(signer_key)
    return _key_text(key.name, key.key_id, private.public_key().public_bytes_raw())


def _note_text_check(text: object) -> bytes:
    if not isinstance(text, str) or not text.endswith("\n"):
        raise TransparencyError("note text: must end in a newline")
    data = _utf8(text)
    if data is None:
        raise TransparencyError("note text: not valid UTF-8")
    if _CONTROL.search(text):
        raise TransparencyError("note text: has a control character other than newline")
    return data


def note_sign(text: str, signer_key: str) -> str:
    """The signed note: the text, an empty line, and one signature line by this key."""
    data = _note_text_check(text)
    key, private = _signer_parse(signer_key)
    signature = base64.b64encode(key.key_id + private.sign(data)).decode("ascii")
    return f"{text}\n{_SIGNATURE_PREFIX}{key.name} {signature}\n"


def _note_split(note: object) -> tuple[str, list[tuple[str, bytes]]]:
    """(text, [(key name, key id and signature)]) of a well-formed note."""
    if not isinstance(note, str) or _utf8(note) is None:
        raise TransparencyError("signed note is malformed: not valid UTF-8 text")
    if _CONTROL.search(note):
        raise TransparencyError("signed note is malformed: a control character other than newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise TransparencyError("signed note is malformed: no empty line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise TransparencyError("signed note is malformed: no signature after the last empty line")
    if not block.endswith("\n"):
        raise TransparencyError("signed note is malformed: the signatures do not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise TransparencyError(
            f"signed note is malformed: {len(lines)} signatures, at most {_MAX_SIGNATURES}"
        )
    signatures = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith(_SIGNATURE_PREFIX):
            raise TransparencyError(
                f"signed note is malformed: signature line {number} does not begin with "
                "an em dash and a space"
            )
        name, _, encoded = line.removeprefix(_SIGNATURE_PREFIX).partition(" ")
        signature = _b64decode(encoded)
        if not _name_valid(name) or signature is None or len(signature) < 5:
            raise TransparencyError(
                f"signed note is malformed: signature line {number} is not a key name "
                "and a base64 signature"
            )
        signatures.append((name, signature))
    return text, signatures


def note_verify(note: str, verifier_key: str) -> str:
    """The note's text, once a signature by this key verifies. Signatures by other keys are
    ignored, as the spec requires; every signature by this key must verify."""
    key, public = _verifier_parse(verifier_key)
    text, signatures = _note_split(note)
    data = text.encode("utf-8")
    by_key = [sig[4:] for name, sig in signatures if name == key.name and sig[:4] == key.key_id]
    if not by_key:
        raise TransparencyError(f"signed note: no signature by the key {key.label}")
    for signature in by_key:
        try:
            public.verify(signature, data)
        except InvalidSignature:
            raise TransparencyError(
                f"signed note: the signature by {key.label} does not verify"
            ) from None
    return text


# --- The log's entries -------------------------------------------------------------------------

ENTRY_VERSION = 1
ENTRY_STRINGS = (
    "actor_type",
    "actor",
    "verb",
    "target_type",
    "target_id",
    "subject",
    "trace_id",
    "payload_digest",
)
_ENTRY_HEAD = struct.Struct(">Bqq")
_LENGTH = struct.Struct(">I")
_INT64 = range(-(2**63), 2**63)


def entry_encode(
    *,
    event_id: int,
    created_at_us: int,
    actor_type: str,
    actor: str,
    verb: str,
    target_type: str,
    target_id: str,
    subject: str,
    trace_id: str,
    payload_digest: str,
) -> bytes:
    """The bytes a leaf hashes: version 1, the event's number and its time (microseconds since
    the Unix epoch, UTC) as 8-byte big-endian signed integers, then each string as its UTF-8
    length (4 bytes, big-endian) and bytes. The server builds the same bytes in SQL."""
    for name, number in (("event_id", event_id), ("created_at_us", created_at_us)):
        if not isinstance(number, int) or isinstance(number, bool) or number not in _INT64:
            raise TransparencyError(f"entry {name}: {number!r} is not a signed 64-bit integer")
    strings = (actor_type, actor, verb, target_type, target_id, subject, trace_id, payload_digest)
    parts = [_ENTRY_HEAD.pack(ENTRY_VERSION, event_id, created_at_us)]
    for name, value in zip(ENTRY_STRINGS, strings, strict=True):
        data = _utf8(value) if isinstance(value, str) else None
        if data is None:
            raise TransparencyError(f"entry {name}: not text that UTF-8 can encode")
        if len(data) > 0xFFFFFFFF:
            raise TransparencyError(f"entry {name}: longer than 4 GiB")
        parts += (_LENGTH.pack(len(data)), data)
    return b"".join(parts)


def entry_decode(data: bytes) -> Entry:
    """The fields of an entry, named as `entry_encode` names them."""
    if not isinstance(data, bytes) or len(data) < _ENTRY_HEAD.size:
        raise TransparencyError(f"entry: shorter than its {_ENTRY_HEAD.size}-byte head")
    version, event_id, created_at_us = _ENTRY_HEAD.unpack_from(data)
    if version != ENTRY_VERSION:
        raise TransparencyError(f"entry: version {version}, only {ENTRY_VERSION} is known")
    fields: Entry = {"event_id": event_id, "created_at_us": created_at_us}
    offset = _ENTRY_HEAD.size
    for name in ENTRY_STRINGS:
        if len(data) < offset + _LENGTH.size:
            raise TransparencyError(f"entry {name}: cut short before its length")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if len(data) < offset + length:
            raise TransparencyError(
                f"entry {name}: {length} bytes long, {len(data) - offset} left in the entry"
            )
        try:
            fields[name] = data[offset : offset + length].decode("utf-8")
        except UnicodeDecodeError:
            raise TransparencyError(f"entry {name}: not valid UTF-8") from None
        offset += length
    if offset != len(data):
        raise TransparencyError(f"entry: {len(data) - offset} bytes after payload_digest")
    return fields


# --- Proof documents -----------------------------------------------------------------------------

_HEX_HASH = re.compile(r"[0-9a-fA-F]{64}")


def _hex_hash(value: object, *, where: str) -> bytes:
    if not isinstance(value, str) or not _HEX_HASH.fullmatch(value):
        raise TransparencyError(f"{where}: not {HASH_SIZE} bytes in hex")
    return bytes.fromhex(value)


def _count(value: object, *, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TransparencyError(f"{where}: {value!r} is not a non-negative integer")
    return value


def _event_verify(number: int, event: object, checkpoint: Checkpoint) -> Entry:
    where = f"proof event {number}"
    if not isinstance(event, Mapping):
        raise TransparencyError(f"{where}: not an object")
    index = _count(event.get("leaf_index"), where=f"{where} leaf_index")
    entry = _b64decode(event.get("entry"))
    if entry is None:
        raise TransparencyError(f"{where} entry: not base64")
    try:
        fields = entry_decode(entry)
    except TransparencyError as exc:
        raise TransparencyError(f"{where} {exc}") from None
    if _hex_hash(event.get("leaf_hash"), where=f"{where} leaf_hash") != leaf_hash(entry):
        raise TransparencyError(f"{where} leaf_hash: not the hash of the entry")
    size = _count(event.get("tree_size"), where=f"{where} tree_size")
    if size != checkpoint.size:
        raise TransparencyError(f"{where} tree_size: {size}, the checkpoint's is {checkpoint.size}")
    if _hex_hash(event.get("root_hash"), where=f"{where} root_hash") != checkpoint.root_hash:
        raise TransparencyError(f"{where} root_hash: not the checkpoint's root hash")
    path = event.get("audit_path")
    if not isinstance(path, list):
        raise TransparencyError(f"{where} audit_path: not a list")
    hashes = [_hex_hash(value, where=f"{where} audit_path") for value in path]
    if not inclusion_verify(
        leaf_hash=leaf_hash(entry), index=index, size=size, path=hashes, root=checkpoint.root_hash
    ):
        raise TransparencyError(
            f"{where} audit_path: does not prove leaf {index} in the tree of size {size}"
        )
    canonical = event.get("payload_canonical")
    if canonical is not None:
        data = _utf8(canonical) if isinstance(canonical, str) else None
        if data is None or hashlib.sha256(data).hexdigest() != fields["payload_digest"]:
            raise TransparencyError(
                f"{where} payload_canonical: its SHA-256 is not the entry's payload_digest"
            )
    shown = event.get("event")
    if shown is not None:
        if not isinstance(shown, Mapping):
            raise TransparencyError(f"{where} event: not an object")
        for name, value in fields.items():
            if name in shown and shown[name] != value:
                raise TransparencyError(
                    f"{where} event.{name}: {shown[name]!r}, the entry says {value!r}"
                )
    return fields


def proof_verify(
    proof: Mapping[str, Any], verifier_key: str, *, origin: str | None = None
) -> list[Entry]:
    """Check a proof as `GET /api/v1/actions/{id}/proof` answers it: the checkpoint's signature
    by the log's key (and, given `origin`, that it is that log's checkpoint, not another log's
    signed with the same key), then each event's entry, leaf hash and inclusion in that
    checkpoint's tree, and its payload when given. The decoded entries, in the document's
    order."""
    if not isinstance(proof, Mapping):
        raise TransparencyError("proof: not an object")
    _verifier_parse(verifier_key)
    note = proof.get("checkpoint")
    if not isinstance(note, str):
        raise TransparencyError("proof checkpoint: not a signed note")
    try:
        checkpoint = checkpoint_parse(note_verify(note, verifier_key))
    except TransparencyError as exc:
        raise TransparencyError(f"proof checkpoint: {exc}") from None
    if origin is not None and checkpoint.origin != origin:
        raise TransparencyError(
            f"proof checkpoint: of the log {checkpoint.origin!r}, not {origin!r}"
        )
    events = proof.get("events")
    if not isinstance(events, list):
        raise TransparencyError("proof events: not a list")
    if not events:
        pending = proof.get("pending")
        waiting = f" ({len(pending)} not in the log yet)" if isinstance(pending, list) else ""
        raise TransparencyError(f"proof events: none, so nothing is proven{waiting}")
    return [_event_verify(number, event, checkpoint) for number, event in enumerate(events)]


# --- Command line --------------------------------------------------------------------------------


def _key_argument(value: str) -> str:
    path = Path(value)
    return (path.read_text(encoding="utf-8") if path.is_file() else value).strip()


def _note_file(path: Path) -> str:
    """A note as written to a file: a witness file may leave an empty line after it."""
    return path.read_text(encoding="utf-8").rstrip("\n") + "\n"


def _moment(created_at_us: int) -> str:
    try:
        return (_EPOCH + timedelta(microseconds=created_at_us)).isoformat()
    except OverflowError:
        return f"{created_at_us} us after the epoch"


def _verify_proof_command(proof_file: Path, key: str, origin: str | None) -> list[str]:
    proof = json.loads(proof_file.read_text(encoding="utf-8"))
    entries = proof_verify(proof, key, origin=origin)
    checkpoint = checkpoint_parse(note_verify(proof["checkpoint"], key))
    lines = []
    for event, entry in zip(proof["events"], entries, strict=True):
        lines.append(
            f"event {entry['event_id']} at {_moment(int(entry['created_at_us']))}:"
            f" {entry['actor_type']}:{entry['actor']} {entry['verb']}"
            f" {entry['target_type']}:{entry['target_id']}"
            f" is leaf {event['leaf_index']} of {checkpoint.origin} at size {checkpoint.size}"
        )
    return [*lines, "ok"]


def _verify_consistency_command(first: Path, second: Path, proof_file: Path, key: str) -> list[str]:
    old = checkpoint_parse(note_verify(_note_file(first), key))
    new = checkpoint_parse(note_verify(_note_file(second), key))
    if old.origin != new.origin:
        raise TransparencyError(f"checkpoints: of two logs, {old.origin!r} and {new.origin!r}")
    proof = json.loads(proof_file.read_text(encoding="utf-8"))
    if not isinstance(proof, dict):
        raise TransparencyError("consistency proof: not an object")
    if proof.get("first") != old.size or proof.get("second") != new.size:
        raise TransparencyError(
            f"consistency proof: from {proof.get('first')!r} to {proof.get('second')!r},"
            f" the checkpoints are of sizes {old.size} and {new.size}"
        )
    path = proof.get("proof")
    if not isinstance(path, list):
        raise TransparencyError("consistency proof proof: not a list")
    hashes = [_hex_hash(value, where="consistency proof proof") for value in path]
    if not consistency_verify(
        first=old.size,
        second=new.size,
        first_root=old.root_hash,
        second_root=new.root_hash,
        path=hashes,
    ):
        raise TransparencyError(
            f"consistency proof: does not show the tree of size {old.size} is a prefix of"
            f" the tree of size {new.size}"
        )
    return [f"{old.origin}: the tree of size {old.size} is a prefix of size {new.size}", "ok"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m escapement_client.transparency",
        description="Verify proofs from Escapement's audit log against the log's public key.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    proof = commands.add_parser(
        "verify-proof", help="check a document from GET /api/v1/actions/{id}/proof"
    )
    proof.add_argument("proof", type=Path, help="the proof document (JSON)")
    proof.add_argument(
        "--origin", default=None, help="the log's origin line (e.g. escapement.example.com/audit)"
    )
    consistency = commands.add_parser(
        "consistency", help="check that a later checkpoint extends an earlier one"
    )
    consistency.add_argument("first", type=Path, help="the earlier signed checkpoint")
    consistency.add_argument("second", type=Path, help="the later signed checkpoint")
    consistency.add_argument(
        "proof", type=Path, help='the proof (JSON): {"first": n, "second": m, "proof": [hex]}'
    )
    for command in (proof, consistency):
        command.add_argument(
            "--key", required=True, help="the log's verifier key, or a file that holds it"
        )
    args = parser.parse_args(argv)
    try:
        key = _key_argument(args.key)
        if args.command == "verify-proof":
            lines = _verify_proof_command(args.proof, key, args.origin)
        else:
            lines = _verify_consistency_command(args.first, args.second, args.proof, key)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
