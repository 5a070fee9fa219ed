"""Evaluating Cedar policies in-process, from the JSON form that Cedar itself parses them into.

Why: every cedarpy call costs about 47 us on this kind of machine before it evaluates anything
(request building, PyO3 crossing, result serialisation), and about 55 us more to read a `decimal`
from the context, so no decision through cedarpy can meet the product's p50 < 100 us. Cedar
still parses and validates every policy (publishing is refused otherwise); what runs here is the
evaluation of the parsed policies, following Cedar's semantics:

- a policy applies when its scope matches and every `when` holds and no `unless` holds;
- an error while evaluating a policy (missing attribute, overflow, wrong type) skips that policy
  and is reported, as Cedar does;
- any applying `forbid` denies, naming every applying forbid; else any applying `permit` allows,
  naming every applying permit; else deny with no policy named.

How, in two layers:

- the reference evaluator: each policy is compiled to a tree of closures (`compile_expr`,
  `compile_scope`, `NativePolicy.applies`), one small function per node, each checking Cedar's
  types and raising `EvalError` with Cedar's kind of message;
- the fast path: each policy set (one slice of a book, see engine.py) is also turned into the
  Python source of one function that evaluates every policy inline, scope and conditions, and
  collects the verdicts (`_SliceSource`). Calling a closure per node and per policy cost more
  than the evaluation itself; one function with the checks written out costs a few hundred
  nanoseconds per policy less. The generated code checks types where a Python operator would
  otherwise give an answer Cedar does not (`true == 1`, `true > 0`, overflow), and takes a
  shortcut everywhere else: when anything goes wrong in a policy (an error, a missing attribute,
  an unexpected value), that policy is evaluated again by its closures, which give the verdict or
  the error exactly. The generated code is only ever a faster way to reach the closures' answer;
  a policy it cannot express is left to its closures.

Policies that use anything outside the supported constructs (templates, `ip`, `datetime`,
entity tags, ...) are not compiled here: `NativePolicies.build` returns None and the caller asks
cedarpy. The equivalence with Cedar is checked by tests that decide the same requests both ways,
and the equivalence of the two layers by tests that evaluate the same expressions both ways.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
# ASCII digits only, and nothing after them: Cedar refuses `decimal("1.0\n")` and non-ASCII
# digits, which Python's `\d`, `$` and `int` would accept.
_DECIMAL = re.compile(r"(-?)([0-9]+)\.([0-9]{1,4})", re.ASCII)


class EvalError(Exception):
    """Evaluating a policy failed; Cedar skips the policy."""


class Unsupported(Exception):
    """A construct this evaluator does not implement; the policy set goes to cedarpy."""


@dataclass(frozen=True, slots=True)
class Uid:
    type: str
    id: str


@dataclass(frozen=True, slots=True)
class CedarDecimal:
    """A Cedar decimal: four fractional digits, held as an integer count of 1/10000."""

    units: int

    @classmethod
    def parse(cls, text: str) -> CedarDecimal:
        match = _DECIMAL.fullmatch(text)
        if match is None:
            raise EvalError(f"invalid decimal {text!r}")
        sign, whole, fraction = match.groups()
        units = int(whole) * 10_000 + int(fraction.ljust(4, "0"))
        units = -units if sign else units
        if not LONG_MIN <= units <= LONG_MAX:
            raise EvalError(f"decimal {text!r} is out of range")
        return cls(units)


_HASHABLE = (str, int, bool, Uid, CedarDecimal)


class CedarSet:
    """A Cedar set: unordered, compared by Cedar equality. Scalars are kept in a hash set keyed
    by (type, value), so that `1`, `true` and `"1"` stay distinct as Cedar wants."""

    __slots__ = ("_keys", "items")

    def __init__(self, items: Iterable[Any]) -> None:
        unique: list[Any] = []
        keys: set[tuple[type, Any]] = set()
        for item in items:
            if type(item) in _HASHABLE:
                key = (type(item), item)
                if key in keys:
                    continue
                keys.add(key)
            elif any(equal(item, seen) for seen in unique):
                continue
            unique.append(item)
        self.items = unique
        self._keys = keys

    def contains(self, value: Any) -> bool:
        if type(value) in _HASHABLE:
            return (type(value), value) in self._keys
        return any(equal(value, item) for item in self.items)


Value = Any
Env = Mapping[str, Value]


@dataclass(frozen=True)
class EntityStore:
    """Attributes and ancestors (transitively closed) of the entities a request may touch."""

    attrs: Mapping[Uid, Mapping[str, Value]]
    ancestors: Mapping[Uid, frozenset[Uid]]

    @classmethod
    def from_json(cls, document: Iterable[Mapping[str, Any]]) -> EntityStore:
        attrs: dict[Uid, dict[str, Value]] = {}
        parents: dict[Uid, set[Uid]] = {}
        for entity in document:
            uid = Uid(entity["uid"]["type"], entity["uid"]["id"])
            attrs[uid] = {name: from_json(value) for name, value in entity["attrs"].items()}
            parents[uid] = {Uid(p["type"], p["id"]) for p in entity.get("parents", [])}
        closed: dict[Uid, frozenset[Uid]] = {}

        def ancestors_of(uid: Uid, seen: frozenset[Uid]) -> frozenset[Uid]:
            if uid in closed:
                return closed[uid]
            found: set[Uid] = set()
            for parent in parents.get(uid, ()):
                if parent not in seen:
                    found |= {parent} | ancestors_of(parent, seen | {uid})
            closed[uid] = frozenset(found)
            return closed[uid]

        for uid in parents:
            ancestors_of(uid, frozenset())
        return cls(attrs, closed)


def from_json(value: Any) -> Value:
    """A value in Cedar's JSON form (as in entities and contexts) to its evaluator form."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not LONG_MIN <= value <= LONG_MAX:
            raise EvalError(f"integer {value} is out of range")
        return value
    if isinstance(value, list):
        return CedarSet(from_json(item) for item in value)
    if isinstance(value, dict):
        if "__entity" in value:
            return Uid(value["__entity"]["type"], value["__entity"]["id"])
        if "__extn" in value:
            extension = value["__extn"]
            if extension.get("fn") == "decimal":
                return CedarDecimal.parse(extension["arg"])
            raise Unsupported(f"extension {extension.get('fn')!r}")
        return {name: from_json(item) for name, item in value.items()}
    raise EvalError(f"unsupported value {value!r}")


def equal(left: Value, right: Value) -> bool:
    """Cedar `==`: values of different types are simply unequal."""
    if type(left) is not type(right):
        return False
    if isinstance(left, CedarSet):
        return len(left.items) == len(right.items) and all(right.contains(i) for i in left.items)
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(equal(left[k], right[k]) for k in left)
    return bool(left == right)


def _type_name(value: Value) -> str:
    if type(value) is bool:
        return "Bool"
    if type(value) is int:
        return "Long"
    return {
        str: "String",
        Uid: "Entity",
        CedarSet: "Set",
        dict: "Record",
        CedarDecimal: "decimal",
    }.get(type(value), type(value).__name__)


def _want(value: Value, kind: type, name: str) -> Any:
    if type(value) is not kind:
        raise EvalError(f"type error: expected {name}, got {_type_name(value)}")
    return value


def _not_bool(value: Value) -> EvalError:
    return EvalError(f"type error: expected Bool, got {_type_name(value)}")


def _long(value: int) -> int:
    if not LONG_MIN <= value <= LONG_MAX:
        raise EvalError("integer overflow")
    return value


Expr = Callable[[Env, EntityStore], Value]
_NOT_CONSTANT = object()


def _constant(value: Value) -> Expr:
    """An expression whose value is known when the policy is compiled (literals, literal sets)."""

    def expr(env: Env, store: EntityStore) -> Value:
        return value

    expr.constant = value  # type: ignore[attr-defined]
    return expr


def _constant_of(expr: Expr) -> Value:
    return getattr(expr, "constant", _NOT_CONSTANT)


def _in(left: Value, right: Value, store: EntityStore) -> bool:
    entity = _want(left, Uid, "Entity")
    if isinstance(right, CedarSet):
        # Cedar checks that every member is an entity before looking for one that matches:
        # `principal in [principal, 1]` is a type error, not true.
        targets = [_want(target, Uid, "Entity") for target in right.items]
    else:
        targets = [_want(right, Uid, "Entity or Set")]
    ancestors = store.ancestors.get(entity, frozenset())
    return any(target == entity or target in ancestors for target in targets)


def _attr(target: Value, name: str, store: EntityStore) -> Value:
    if isinstance(target, Uid):
        attrs = store.attrs.get(target)
        if attrs is None:
            raise EvalError(f"entity {target.type}::{target.id!r} does not exist")
        if name not in attrs:
            raise EvalError(f"{target.type}::{target.id!r} has no attribute {name!r}")
        return attrs[name]
    if isinstance(target, dict):
        if name not in target:
            raise EvalError(f"record has no attribute {name!r}")
        return target[name]
    raise EvalError(f"type error: cannot read attribute {name!r} of {_type_name(target)}")


def _has(target: Value, name: str, store: EntityStore) -> bool:
    if isinstance(target, Uid):
        return name in store.attrs.get(target, {})
    if isinstance(target, dict):
        return name in target
    raise EvalError(f"type error: `has` on {_type_name(target)}")


_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_ARITHMETIC: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}
_DECIMAL_METHODS: dict[str, Callable[[int, int], bool]] = {
    "lessThan": lambda a, b: a < b,
    "lessThanOrEqual": lambda a, b: a <= b,
    "greaterThan": lambda a, b: a > b,
    "greaterThanOrEqual": lambda a, b: a >= b,
}


def _like(pattern: Iterable[Any]) -> Callable[[str], bool]:
    """A `like` pattern as a matcher. Not a regular expression: `.*a.*a.*b` backtracks for
    seconds on a few dozen characters, where this takes one pass per literal segment."""
    segments = [""]  # the literal text between wildcards
    for part in pattern:
        if part == "Wildcard":
            segments.append("")
        else:
            segments[-1] += part["Literal"]
    if len(segments) == 1:
        exact = segments[0]
        return lambda text: text == exact
    head, *middle, tail = segments

    def matches(text: str) -> bool:
        end = len(text) - len(tail)
        if end < len(head) or not text.startswith(head) or not text.endswith(tail):
            return False
        # The earliest place for each segment leaves the most room for the next ones.
        position = len(head)
        for segment in middle:
            found = text.find(segment, position, end)
            if found < 0:
                return False
            position = found + len(segment)
        return True

    return matches


def compile_expr(node: Mapping[str, Any]) -> Expr:
    """Turn one node of Cedar's JSON expression form into a Python closure."""
    if len(node) != 1:
        raise Unsupported(f"expression node {sorted(node)}")
    (kind, body), *_ = node.items()

    if kind == "Value":
        return _constant(from_json(body))
    if kind == "Var":
        if body not in ("principal", "action", "resource", "context"):
            raise Unsupported(f"variable {body!r}")
        return lambda env, store: env[body]
    if kind == "!":
        arg = compile_expr(body["arg"])
        return lambda env, store: not _want(arg(env, store), bool, "Bool")
    if kind == "neg":
        arg = compile_expr(body["arg"])
        return lambda env, store: _long(-_want(arg(env, store), int, "Long"))
    if kind in ("&&", "||"):
        left, right = compile_expr(body["left"]), compile_expr(body["right"])
        # The hot path of most policies: written out, checks inlined (`is True/False` is the type
        # check, as only bools are those two objects).
        if kind == "&&":

            def conjunction(env: Env, store: EntityStore) -> bool:
                first = left(env, store)
                if first is False:
                    return False
                if first is not True:
                    raise _not_bool(first)
                second = right(env, store)
                if second is True or second is False:
                    return second
                raise _not_bool(second)

            return conjunction

        def disjunction(env: Env, store: EntityStore) -> bool:
            first = left(env, store)
            if first is True:
                return True
            if first is not False:
                raise _not_bool(first)
            second = right(env, store)
            if second is True or second is False:
                return second
            raise _not_bool(second)

        return disjunction
    if kind in ("==", "!="):
        left, right = compile_expr(body["left"]), compile_expr(body["right"])
        constant = _constant_of(right)
        if type(constant) in _HASHABLE:
            # Against a scalar literal (`context.segment == "vip"`): same type and same value.
            kind_of = type(constant)
            if kind == "==":
                return lambda env, store: (
                    type(value := left(env, store)) is kind_of and value == constant
                )
            return lambda env, store: (
                not (type(value := left(env, store)) is kind_of and value == constant)
            )
        if kind == "==":
            return lambda env, store: equal(left(env, store), right(env, store))
        return lambda env, store: not equal(left(env, store), right(env, store))
    if kind in _COMPARE:
        left, right, compare = (
            compile_expr(body["left"]),
            compile_expr(body["right"]),
            _COMPARE[kind],
        )

        def comparison(env: Env, store: EntityStore) -> bool:
            a, b = left(env, store), right(env, store)
            if type(a) is not int or type(b) is not int:
                raise EvalError(f"type error: {kind} needs two Longs")
            return compare(a, b)

        return comparison
    if kind in _ARITHMETIC:
        left, right, apply = (
            compile_expr(body["left"]),
            compile_expr(body["right"]),
            _ARITHMETIC[kind],
        )
        return lambda env, store: _long(
            apply(_want(left(env, store), int, "Long"), _want(right(env, store), int, "Long"))
        )
    if kind == "in":
        left, right = compile_expr(body["left"]), compile_expr(body["right"])
        return lambda env, store: _in(left(env, store), right(env, store), store)
    if kind == ".":
        name = body["attr"]
        if body["left"] == {"Var": "context"}:
            # `context.x`, the commonest read of all: the context is always a record.
            def context_attribute(env: Env, store: EntityStore) -> Value:
                context = env["context"]
                if name in context:
                    return context[name]
                raise EvalError(f"record has no attribute {name!r}")

            return context_attribute
        target = compile_expr(body["left"])

        def attribute(env: Env, store: EntityStore) -> Value:
            value = target(env, store)
            if type(value) is dict:  # records (the context and its params) first: most reads
                if name in value:
                    return value[name]
                raise EvalError(f"record has no attribute {name!r}")
            return _attr(value, name, store)

        return attribute
    if kind == "has":
        if not isinstance(body["attr"], str):
            raise Unsupported("`has` on an attribute path")
        target, name = compile_expr(body["left"]), body["attr"]
        return lambda env, store: _has(target(env, store), name, store)
    if kind == "is":
        target, entity_type = compile_expr(body["left"]), body["entity_type"]
        within = compile_expr(body["in"]) if "in" in body else None

        def is_type(env: Env, store: EntityStore) -> bool:
            value = _want(target(env, store), Uid, "Entity")
            if value.type != entity_type:
                return False
            return within is None or _in(value, within(env, store), store)

        return is_type
    if kind == "like":
        target, matches = compile_expr(body["left"]), _like(body["pattern"])
        return lambda env, store: matches(_want(target(env, store), str, "String"))
    if kind == "if-then-else":
        condition = compile_expr(body["if"])
        then, otherwise = compile_expr(body["then"]), compile_expr(body["else"])
        return lambda env, store: (
            then(env, store)
            if _want(condition(env, store), bool, "Bool")
            else otherwise(env, store)
        )
    if kind == "Set":
        items = [compile_expr(item) for item in body]
        constants = [_constant_of(item) for item in items]
        if all(value is not _NOT_CONSTANT for value in constants):
            return _constant(CedarSet(constants))
        return lambda env, store: CedarSet(item(env, store) for item in items)
    if kind == "Record":
        fields = {name: compile_expr(item) for name, item in body.items()}
        values = {name: _constant_of(item) for name, item in fields.items()}
        if all(value is not _NOT_CONSTANT for value in values.values()):
            return _constant(values)
        return lambda env, store: {name: item(env, store) for name, item in fields.items()}
    if kind in ("contains", "containsAll", "containsAny"):
        left, right = compile_expr(body["left"]), compile_expr(body["right"])

        def set_test(env: Env, store: EntityStore) -> bool:
            haystack: CedarSet = _want(left(env, store), CedarSet, "Set")
            needle = right(env, store)
            if kind == "contains":
                return haystack.contains(needle)
            needles = _want(needle, CedarSet, "Set").items
            if kind == "containsAll":
                return all(haystack.contains(item) for item in needles)
            return any(haystack.contains(item) for item in needles)

        return set_test
    if kind == "isEmpty":
        arg = compile_expr(body["arg"])
        return lambda env, store: not _want(arg(env, store), CedarSet, "Set").items
    if kind == "decimal":
        if len(body) != 1 or "Value" not in body[0] or not isinstance(body[0]["Value"], str):
            raise Unsupported("decimal() of a non-literal")
        try:
            return _constant(CedarDecimal.parse(body[0]["Value"]))
        except EvalError as exc:
            # Cedar parses a malformed literal such as `decimal("1.23456")` and fails when it
            # evaluates it: the policy is skipped with an error, the others still count.
            failure = str(exc)

            def malformed(env: Env, store: EntityStore) -> Value:
                raise EvalError(failure)

            return malformed
    if kind in _DECIMAL_METHODS:
        if len(body) != 2:
            raise Unsupported(f"{kind} with {len(body)} arguments")
        left, right, order = compile_expr(body[0]), compile_expr(body[1]), _DECIMAL_METHODS[kind]
        return lambda env, store: order(
            _want(left(env, store), CedarDecimal, "decimal").units,
            _want(right(env, store), CedarDecimal, "decimal").units,
        )
    raise Unsupported(f"expression {kind!r}")


Scope = Callable[[Value, EntityStore], bool]


def _entity(spec: Mapping[str, Any]) -> Uid:
    return Uid(spec["type"], spec["id"])


def _admit_all(value: Value, store: EntityStore) -> bool:
    return True


def _maybe(scope: Scope) -> Scope | None:
    return None if scope is _admit_all else scope


def compile_scope(spec: Mapping[str, Any]) -> Scope:
    op = spec["op"]
    if op == "All":
        return _admit_all
    if op == "==":
        if "entity" not in spec:
            raise Unsupported("template slot in scope")
        target = _entity(spec["entity"])
        target_id, target_type = target.id, target.type
        return lambda value, store: value.id == target_id and value.type == target_type
    if op == "in":
        if "entities" in spec:
            targets = CedarSet(_entity(item) for item in spec["entities"])
            return lambda value, store: _in(value, targets, store)
        if "entity" not in spec:
            raise Unsupported("template slot in scope")
        target = _entity(spec["entity"])
        return lambda value, store: _in(value, target, store)
    if op == "is":
        entity_type = spec["entity_type"]
        within = _entity(spec["in"]["entity"]) if "in" in spec else None
        if "in" in spec and "entity" not in spec["in"]:
            raise Unsupported("template slot in scope")
        return lambda value, store: (
            value.type == entity_type and (within is None or _in(value, within, store))
        )
    raise Unsupported(f"scope operator {op!r}")


_NO_ENTITIES = EntityStore({}, {})


@dataclass(frozen=True)
class NativePolicy:
    cedar_id: str
    forbid: bool
    # None: the scope admits everything (or was checked when the set was built).
    principal: Scope | None
    action: Scope | None
    resource: Scope | None
    conditions: tuple[tuple[bool, Expr], ...]  # (is_when, body)
    # Whether a condition reads `action`: if not, the policy's verdict for a request is the same
    # whichever question asks it, and one evaluation can serve both.
    reads_action: bool = True
    # The policy in Cedar's JSON form, for the generated evaluator.
    source: Mapping[str, Any] | None = None

    @property
    def shared(self) -> bool:
        """Whether one verdict serves every question of a request: the conditions do not read
        `action` and the action scope was settled when the set was built."""
        return not self.reads_action and self.action is None

    def applies(self, env: Env, store: EntityStore) -> bool:
        if not (
            (self.principal is None or self.principal(env["principal"], store))
            and (self.action is None or self.action(env["action"], store))
            and (self.resource is None or self.resource(env["resource"], store))
        ):
            return False
        for is_when, body in self.conditions:
            holds = body(env, store)
            if holds is not is_when:
                if holds is not True and holds is not False:
                    raise _not_bool(holds)
                return False
        return True

    def verdict(self, env: Env, store: EntityStore) -> bool | str:
        """True or False, or the error that skips the policy, in Cedar's words."""
        try:
            return self.applies(env, store)
        except EvalError as exc:
            return f"error while evaluating policy `{self.cedar_id}`: {exc}"


Memo = dict[str, bool | str]
Authorizer = Callable[[Uid, Uid, Uid, Value, EntityStore, Memo], dict[str, Any]]


class NativePolicies:
    """A policy set compiled to closures and to one generated function; `authorize` answers like
    cedarpy's JSON result."""

    def __init__(
        self, policies: list[NativePolicy], *, generate: bool = True, generate_after: int = 0
    ) -> None:
        self.policies = policies
        # None while the set is evaluated by its closures alone.
        self.generated: Authorizer | None = None
        # Questions the closures answer before the code is generated (-1: never): writing and
        # compiling it costs a fraction of a millisecond per policy, which a set asked once (a
        # draft book being tried) would not earn back.
        self._countdown = generate_after if generate else -1
        if self._countdown == 0:
            self.generate()

    def generate(self) -> None:
        """Generate the set's code now (if Python accepts it; else the closures go on)."""
        self._countdown = -1
        self.generated = _generate(self.policies, self._by_closures)

    def _by_closures(
        self,
        principal: Uid,
        action: Uid,
        resource: Uid,
        context: Value,
        store: EntityStore,
        memo: Memo,
    ) -> dict[str, Any]:
        return self.authorize_by_closures(
            principal=principal,
            action=action,
            resource=resource,
            context=context,
            store=store,
            memo=memo,
        )

    @classmethod
    def build(
        cls,
        static_policies: Mapping[str, Mapping[str, Any]],
        *,
        action: str | None = None,
        resource: Uid | None = None,
        generate: bool = True,
        generate_after: int = 0,
    ) -> NativePolicies | None:
        """Compile a set; None if it uses a construct this evaluator does not know.

        With `action`, the set will only be asked about that action, whose entity has no
        parents in this product's schema: action scopes are decided here, once, and policies
        for other actions dropped. With `resource`, the set will only be asked about that
        resource: the resource scopes that do not depend on its ancestors (`==`, `is`) are
        decided here too. Without `generate`, only the closures evaluate the set; with
        `generate_after`, they answer that many questions before the code is generated."""
        fixed = Uid("Action", action) if action is not None else None
        try:
            compiled = []
            for cedar_id, policy in static_policies.items():
                action_scope = _maybe(compile_scope(policy["action"]))
                if fixed is not None:
                    if action_scope is not None and not action_scope(fixed, _NO_ENTITIES):
                        continue
                    action_scope = None
                resource_scope = _maybe(compile_scope(policy["resource"]))
                if (
                    resource is not None
                    and resource_scope is not None
                    and policy["resource"]["op"] in ("==", "is")
                    and "in" not in policy["resource"]
                ):
                    if not resource_scope(resource, _NO_ENTITIES):
                        continue
                    resource_scope = None
                compiled.append(
                    NativePolicy(
                        cedar_id=cedar_id,
                        forbid=policy["effect"] == "forbid",
                        principal=_maybe(compile_scope(policy["principal"])),
                        action=action_scope,
                        resource=resource_scope,
                        conditions=tuple(
                            (condition["kind"] == "when", compile_expr(condition["body"]))
                            for condition in policy.get("conditions", [])
                        ),
                        reads_action=_reads_action(policy.get("conditions", [])),
                        source=policy,
                    )
                )
        except (Unsupported, EvalError, KeyError, TypeError):
            return None
        except RecursionError:
            # Compiling walks the policies recursively: one nested past Python's limit (the
            # engine refuses those, see limits.py) is no construct to evaluate here either.
            return None
        return cls(compiled, generate=generate, generate_after=generate_after)

    def authorize(
        self,
        *,
        principal: Uid,
        action: Uid,
        resource: Uid,
        context: Value,
        store: EntityStore,
        memo: Memo | None = None,
    ) -> dict[str, Any]:
        """Decide one request. `memo` carries verdicts between the questions of one request
        (same principal, resource and context): a policy that does not read `action` is
        evaluated once for both (its action scope was settled when the set was built)."""
        generated = self.generated
        if generated is not None:
            return generated(
                principal, action, resource, context, store, {} if memo is None else memo
            )
        if self._countdown > 0:
            self._countdown -= 1
            if self._countdown == 0:
                self.generate()  # for the next question
        return self.authorize_by_closures(
            principal=principal,
            action=action,
            resource=resource,
            context=context,
            store=store,
            memo=memo,
        )

    def authorize_by_closures(
        self,
        *,
        principal: Uid,
        action: Uid,
        resource: Uid,
        context: Value,
        store: EntityStore,
        memo: Memo | None = None,
    ) -> dict[str, Any]:
        """`authorize` by the reference evaluator alone (the closures)."""
        env = {"principal": principal, "action": action, "resource": resource, "context": context}
        permits: list[str] = []
        forbids: list[str] = []
        errors: list[str] = []
        for policy in self.policies:
            cedar_id = policy.cedar_id
            shared = memo is not None and policy.shared
            verdict = memo.get(cedar_id) if shared and memo is not None else None
            if verdict is None:
                verdict = policy.verdict(env, store)
                if shared and memo is not None:
                    memo[cedar_id] = verdict
            if verdict is True:
                (forbids if policy.forbid else permits).append(cedar_id)
            elif verdict is not False:
                errors.append(str(verdict))
        return _decision(forbids, permits, errors)


def _reads_action(conditions: Iterable[Mapping[str, Any]]) -> bool:
    return '{"Var": "action"}' in json.dumps([condition["body"] for condition in conditions])


def _answer(decision: str, reasons: list[str], errors: list[str]) -> dict[str, Any]:
    return {"decision": decision, "diagnostics": {"reason": reasons, "errors": errors}}


def _decision(forbids: list[str], permits: list[str], errors: list[str]) -> dict[str, Any]:
    if forbids:
        return _answer("Deny", forbids, errors)
    if permits:
        return _answer("Allow", permits, errors)
    return _answer("Deny", [], errors)


# ---------------------------------------------------------------------------------------------
# The generated evaluator
# ---------------------------------------------------------------------------------------------


class _Diverted(Exception):
    """Raised by generated code where Cedar fails: the closures then give the exact error."""


def _fail() -> Any:
    raise _Diverted


def _contains(haystack: Value, needle: Value) -> bool:
    return bool(_want(haystack, CedarSet, "Set").contains(needle))


def _contains_all(haystack: Value, needles: Value) -> bool:
    found: CedarSet = _want(haystack, CedarSet, "Set")
    return all(found.contains(item) for item in _want(needles, CedarSet, "Set").items)


def _contains_any(haystack: Value, needles: Value) -> bool:
    found: CedarSet = _want(haystack, CedarSet, "Set")
    return any(found.contains(item) for item in _want(needles, CedarSet, "Set").items)


_NO_ANCESTORS: frozenset[Uid] = frozenset()
_DECIMAL_OPERATORS = {
    "lessThan": "<",
    "lessThanOrEqual": "<=",
    "greaterThan": ">",
    "greaterThanOrEqual": ">=",
}
_VARIABLES = ("principal", "action", "resource", "context")


@dataclass(frozen=True, slots=True)
class _Code:
    """A generated Python expression; `boolean` when it can only give True or False (or fail),
    `constant` the value when it is known at build time."""

    text: str
    boolean: bool = False
    constant: Any = _NOT_CONSTANT


class _SliceSource:
    """Writes the Python source of one function deciding a policy set.

    Each expression becomes a Python expression that gives the same value as the closure of the
    same node, or raises (any exception); temporaries are assignment expressions with names of
    their own. The names the source uses (helpers, constants) go to `namespace`."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {
            "_fail": _fail,
            "_equal": equal,
            "_in": _in,
            "_attr": _attr,
            "_has": _has,
            "_contains": _contains,
            "_contains_all": _contains_all,
            "_contains_any": _contains_any,
            "_CedarSet": CedarSet,
            "_Uid": Uid,
            "_CedarDecimal": CedarDecimal,
            "_NO_ANCESTORS": _NO_ANCESTORS,
            "_decision": _decision,
        }
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def _hold(self, value: Any) -> str:
        """A name for a value the source refers to."""
        if type(value) in (str, int, bool):
            return repr(value)
        name = self._name("_k")
        self.namespace[name] = value
        return name

    def _literal(self, value: Value) -> _Code:
        return _Code(self._hold(value), type(value) is bool, value)

    @staticmethod
    def _boolean(code: _Code, temp: str) -> str:
        """`code` checked to be a Bool, as Cedar checks the operands of `&&`, `||`, `!`, `if`
        and the conditions of a policy."""
        if code.boolean:
            return code.text
        return f"({temp} if ({temp} := {code.text}) is True or {temp} is False else _fail())"

    def _member(self, entity: str, target: Value) -> str | None:
        """`entity in target` for an entity held in the local `entity` and a target known at
        build time; None when the target is not all entities (a type error left to `_in`)."""
        if type(target) is Uid:
            held = self._hold(target)
            return f"({entity} == {held} or {held} in store.ancestors.get({entity}, _NO_ANCESTORS))"
        if type(target) is CedarSet and all(type(item) is Uid for item in target.items):
            held = self._hold(frozenset(target.items))
            return (
                f"({entity} in {held} or not {held}.isdisjoint("
                f"store.ancestors.get({entity}, _NO_ANCESTORS)))"
            )
        return None

    def expr(self, node: Mapping[str, Any]) -> _Code:
        if len(node) != 1:
            raise Unsupported(f"expression node {sorted(node)}")
        (kind, body), *_ = node.items()
        t = self._name("_t")

        if kind == "Value":
            return self._literal(from_json(body))
        if kind == "Var":
            if body not in _VARIABLES:
                raise Unsupported(f"variable {body!r}")
            return _Code(str(body))
        if kind == "!":
            arg = self.expr(body["arg"])
            return _Code(f"(not {self._boolean(arg, t)})", True)
        if kind == "neg":
            arg = self.expr(body["arg"])
            return _Code(
                f"(-{t} if type({t} := {arg.text}) is int and {t} != {LONG_MIN} else _fail())"
            )
        if kind in ("&&", "||"):
            left, right = self.expr(body["left"]), self.expr(body["right"])
            joint = "and" if kind == "&&" else "or"
            u = self._name("_t")
            return _Code(f"({self._boolean(left, t)} {joint} {self._boolean(right, u)})", True)
        if kind in ("==", "!="):
            left, right = self.expr(body["left"]), self.expr(body["right"])
            same = self._equality(left, right, t)
            return _Code(same if kind == "==" else f"(not {same})", True)
        if kind in ("<", "<=", ">", ">="):
            left, right = self.expr(body["left"]), self.expr(body["right"])
            return _Code(self._longs(left, right, t, lambda a, b: f"{a} {kind} {b}"), True)
        if kind in ("+", "-", "*"):
            left, right = self.expr(body["left"]), self.expr(body["right"])
            r = self._name("_t")
            u = self._name("_t")
            return _Code(
                f"({r} if type({t} := {left.text}) is int and type({u} := {right.text}) is int"
                f" and {LONG_MIN} <= ({r} := {t} {kind} {u}) <= {LONG_MAX} else _fail())"
            )
        if kind == "in":
            left, right = self.expr(body["left"]), self.expr(body["right"])
            member = self._member(t, right.constant)
            if member is None:
                return _Code(f"_in({left.text}, {right.text}, store)", True)
            return _Code(f"({member} if type({t} := {left.text}) is _Uid else _fail())", True)
        if kind == ".":
            name = repr(body["attr"])
            if body["left"] == {"Var": "context"}:
                # The context is a record (checked on entry): a missing field raises KeyError.
                return _Code(f"context[{name}]")
            target = self.expr(body["left"])
            return _Code(
                f"({t}[{name}] if type({t} := {target.text}) is dict"
                f" else _attr({t}, {name}, store))"
            )
        if kind == "has":
            if not isinstance(body["attr"], str):
                raise Unsupported("`has` on an attribute path")
            name = repr(body["attr"])
            if body["left"] == {"Var": "context"}:
                return _Code(f"({name} in context)", True)
            target = self.expr(body["left"])
            return _Code(
                f"({name} in {t} if type({t} := {target.text}) is dict"
                f" else _has({t}, {name}, store))",
                True,
            )
        if kind == "is":
            target = self.expr(body["left"])
            test = f"{t}.type == {body['entity_type']!r}"
            if "in" in body:
                within = self.expr(body["in"])
                member = self._member(t, within.constant)
                test += f" and {member or f'_in({t}, {within.text}, store)'}"
            return _Code(f"(({test}) if type({t} := {target.text}) is _Uid else _fail())", True)
        if kind == "like":
            target, matches = self.expr(body["left"]), self._hold(_like(body["pattern"]))
            return _Code(
                f"({matches}({t}) if type({t} := {target.text}) is str else _fail())", True
            )
        if kind == "if-then-else":
            condition = self.expr(body["if"])
            then, otherwise = self.expr(body["then"]), self.expr(body["else"])
            return _Code(
                f"({then.text} if {self._boolean(condition, t)} else {otherwise.text})",
                then.boolean and otherwise.boolean,
            )
        if kind == "Set":
            items = [self.expr(item) for item in body]
            if all(item.constant is not _NOT_CONSTANT for item in items):
                return self._literal(CedarSet(item.constant for item in items))
            return _Code(f"_CedarSet([{', '.join(item.text for item in items)}])")
        if kind == "Record":
            fields = {name: self.expr(item) for name, item in body.items()}
            if all(item.constant is not _NOT_CONSTANT for item in fields.values()):
                return self._literal({name: item.constant for name, item in fields.items()})
            pairs = ", ".join(f"{name!r}: {item.text}" for name, item in fields.items())
            return _Code(f"{{{pairs}}}")
        if kind == "contains":
            left, right = self.expr(body["left"]), self.expr(body["right"])
            haystack = left.constant
            if type(haystack) is CedarSet and all(type(i) is str for i in haystack.items):
                texts = self._hold(frozenset(haystack.items))
                return _Code(f"(type({t} := {right.text}) is str and {t} in {texts})", True)
            return _Code(f"_contains({left.text}, {right.text})", True)
        if kind in ("containsAll", "containsAny"):
            left, right = self.expr(body["left"]), self.expr(body["right"])
            helper = "_contains_all" if kind == "containsAll" else "_contains_any"
            return _Code(f"{helper}({left.text}, {right.text})", True)
        if kind == "isEmpty":
            arg = self.expr(body["arg"])
            return _Code(
                f"(not {t}.items if type({t} := {arg.text}) is _CedarSet else _fail())", True
            )
        if kind == "decimal":
            if len(body) != 1 or "Value" not in body[0] or not isinstance(body[0]["Value"], str):
                raise Unsupported("decimal() of a non-literal")
            try:
                return self._literal(CedarDecimal.parse(body[0]["Value"]))
            except EvalError:
                return _Code("_fail()")  # a malformed literal fails when it is evaluated
        if kind in _DECIMAL_OPERATORS:
            if len(body) != 2:
                raise Unsupported(f"{kind} with {len(body)} arguments")
            left, right = self.expr(body[0]), self.expr(body[1])
            op = _DECIMAL_OPERATORS[kind]
            u = self._name("_t")
            if type(right.constant) is CedarDecimal:
                return _Code(
                    f"({t}.units {op} {right.constant.units}"
                    f" if type({t} := {left.text}) is _CedarDecimal else _fail())",
                    True,
                )
            return _Code(
                f"({t}.units {op} {u}.units if type({t} := {left.text}) is _CedarDecimal"
                f" and type({u} := {right.text}) is _CedarDecimal else _fail())",
                True,
            )
        raise Unsupported(f"expression {kind!r}")

    def _equality(self, left: _Code, right: _Code, t: str) -> str:
        """Cedar `==`: values of different types are unequal (Python has `True == 1`)."""
        if left.constant is not _NOT_CONSTANT and right.constant is _NOT_CONSTANT:
            left, right = right, left  # a constant cannot fail, so the order does not matter
        constant = right.constant
        kind = type(constant)
        if kind in (str, Uid, CedarDecimal):
            # Python's `==` between these and any other value is Cedar's.
            return f"({left.text} == {right.text})"
        if kind is bool:
            return f"({left.text} is {right.text})"
        if kind is int:
            return f"(type({t} := {left.text}) is int and {t} == {right.text})"
        return f"_equal({left.text}, {right.text})"

    def _longs(self, left: _Code, right: _Code, t: str, compare: Callable[[str, str], str]) -> str:
        """A comparison of two Longs (Cedar refuses Bools, which Python would compare)."""
        if type(right.constant) is int:
            return f"({compare(t, right.text)} if type({t} := {left.text}) is int else _fail())"
        u = self._name("_t")
        return (
            f"({compare(t, u)} if type({t} := {left.text}) is int"
            f" and type({u} := {right.text}) is int else _fail())"
        )

    def scope(self, variable: str, spec: Mapping[str, Any]) -> str | None:
        """The scope test of a variable (always an entity, checked on entry); None for all."""
        op = spec["op"]
        if op == "All":
            return None
        if op == "==":
            target = _entity(spec["entity"])
            return f"({variable}.id == {target.id!r} and {variable}.type == {target.type!r})"
        if op == "in":
            if "entities" in spec:
                targets: Value = CedarSet(_entity(item) for item in spec["entities"])
            else:
                targets = _entity(spec["entity"])
            member = self._member(variable, targets)
            return member or f"_in({variable}, {self._hold(targets)}, store)"
        if op == "is":
            test = f"{variable}.type == {spec['entity_type']!r}"
            if "in" in spec:
                test += f" and {self._member(variable, _entity(spec['in']['entity']))}"
            return f"({test})"
        raise Unsupported(f"scope operator {op!r}")

    def verdict(self, policy: NativePolicy) -> str:
        """The expression of whether a policy applies: scope, then conditions in order."""
        source = policy.source
        if source is None:
            raise Unsupported("no source")
        tests: list[str] = []
        for variable, scope in (
            ("principal", policy.principal),
            ("action", policy.action),
            ("resource", policy.resource),
        ):
            if scope is not None:  # else admits all, or settled when the set was built
                test = self.scope(variable, source[variable])
                if test is not None:
                    tests.append(test)
        for condition in source.get("conditions", []):
            body = self._boolean(self.expr(condition["body"]), self._name("_t"))
            tests.append(body if condition["kind"] == "when" else f"(not {body})")
        return " and ".join(tests) or "True"


def _generate(policies: list[NativePolicy], by_closures: Authorizer) -> Authorizer | None:
    """One function deciding the set, with the signature of `NativePolicies.authorize` (all
    arguments given); None if Python refuses its source."""
    try:
        return _generate_checked(policies, by_closures, check_each=False)
    except _PYTHON_REFUSES:
        # Python refused the source as a whole: find the policies it refuses, one by one.
        try:
            return _generate_checked(policies, by_closures, check_each=True)
        except _PYTHON_REFUSES:
            return None


# What `compile` raises on source too deeply nested for Python's parser or too large.
_PYTHON_REFUSES = (SyntaxError, RecursionError, MemoryError, ValueError, OverflowError)


def _generate_checked(
    policies: list[NativePolicy], by_closures: Authorizer, *, check_each: bool
) -> Authorizer:
    """The source of the function, compiled.

    Per policy: the verdict from the memo if it is shared and known; else the generated
    expression; else, if that raised, the closures' verdict (the exact error, or the answer
    where the generated code was not sure). A policy the generator cannot write, or whose
    expression Python refuses (`check_each`: nested too deeply for its parser), is left to its
    closures; the function's `closures_only` names those policies."""

    def by_closure(
        index: int, principal: Uid, action: Uid, resource: Uid, context: Value, store: EntityStore
    ) -> bool | str:
        env = {"principal": principal, "action": action, "resource": resource, "context": context}
        return policies[index].verdict(env, store)

    source = _SliceSource()
    source.namespace["_by_closure"] = by_closure
    source.namespace["_by_closures"] = by_closures
    lines = [
        "def decide(principal, action, resource, context, store, memo):",
        # The generated code reads the context as a record and the variables as entities; any
        # other request is rare (tests), and left to the closures.
        "    if type(context) is not dict or not (type(principal) is type(action)"
        " is type(resource) is _Uid):",
        "        return _by_closures(principal, action, resource, context, store, memo)",
        "    forbids = []",
        "    permits = []",
        "    errors = []",
    ]
    closures_only: list[str] = []
    for index, policy in enumerate(policies):
        cedar_id = repr(policy.cedar_id)
        try:
            verdict: str | None = source.verdict(policy)
            if check_each:
                compile(f"({verdict})", "<policy>", "eval")
        except Exception:  # noqa: BLE001 - whatever cannot be written, the closures evaluate
            verdict = None
            closures_only.append(policy.cedar_id)
        slow = f"v = _by_closure({index}, principal, action, resource, context, store)"
        body = (
            [slow]
            if verdict is None
            else ["try:", f"    v = {verdict}", "except Exception:", f"    {slow}"]
        )
        if policy.shared:
            # `in` and `[]` rather than `memo.get`: no call, half the cost.
            lines += [f"    if {cedar_id} in memo:", f"        v = memo[{cedar_id}]", "    else:"]
            lines += [f"        {line}" for line in body]
            lines.append(f"        memo[{cedar_id}] = v")
        else:
            lines += [f"    {line}" for line in body]
        lines += [
            "    if v is not False:",
            "        if v is True:",
            f"            {'forbids' if policy.forbid else 'permits'}.append({cedar_id})",
            "        else:",
            "            errors.append(v)",
        ]
    lines.append("    return _decision(forbids, permits, errors)")
    text = "\n".join(lines) + "\n"

    code = compile(text, "<policy set>", "exec")
    exec(code, source.namespace)  # noqa: S102 - source written above from parsed policies
    decide: Authorizer = source.namespace["decide"]
    decide.source = text  # type: ignore[attr-defined]
    decide.closures_only = closures_only  # type: ignore[attr-defined]
    return decide
