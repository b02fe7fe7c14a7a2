"""LoopBack 3's ACL resolution (acl.js `getMatchingScore` / `resolvePermission`), table-driven, no I/O.

The cases follow LoopBack's documentation and its own tests (test/acl.test.js): the most specific rule
wins (property, then access type, then principal type, then role), DENY wins at equal specificity, and with
no matching rule the answer is ALLOW.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.models.definition import AclEntry
from gateway.security.acl import METHODS, Grant, Subject, Verdict, decide, matching_score, resolve


def rule(principal: str, permission: str, access: str = "*", prop: Any = "*", kind: str = "ROLE") -> AclEntry:
    return AclEntry(
        access_type=access,
        principal_type=kind,
        principal_id=principal,
        permission=permission,
        property=tuple(prop) if isinstance(prop, list) else prop,
    )


ANON = Subject(None)
ALICE = Subject("alice")
ADMIN = Subject("root", frozenset({"admin"}))

DENY_ALL = rule("$everyone", "DENY")


@pytest.mark.parametrize(
    ("acls", "method", "subject", "owner", "expected"),
    [
        # No rules: LoopBack settles DEFAULT as ALLOW.
        ([], "find", ANON, False, Verdict.ALLOW),
        ([], "deleteById", ANON, False, Verdict.ALLOW),
        # acl.test.js "should order ACL entries based on the matching score": $owner beats $everyone.
        (
            [DENY_ALL, rule("$owner", "ALLOW"), rule("$everyone", "ALLOW", "READ")],
            "find",
            ALICE,
            True,
            Verdict.ALLOW,
        ),
        # The docs' "deny everyone, then allow reads": READ is more specific than *.
        ([DENY_ALL, rule("$everyone", "ALLOW", "READ")], "find", ANON, False, Verdict.ALLOW),
        ([DENY_ALL, rule("$everyone", "ALLOW", "READ")], "create", ANON, False, Verdict.DENY),
        ([DENY_ALL, rule("$everyone", "ALLOW", "READ")], "createChangeStream", ANON, False, Verdict.ALLOW),
        # A property (method) rule beats an access-type rule.
        (
            [rule("$everyone", "ALLOW", "WRITE"), rule("$everyone", "DENY", prop="deleteById")],
            "deleteById",
            ALICE,
            False,
            Verdict.DENY,
        ),
        (
            [rule("$everyone", "DENY", "WRITE"), rule("$everyone", "ALLOW", "*", "create")],
            "create",
            ANON,
            False,
            Verdict.ALLOW,
        ),
        # At equal specificity DENY wins, whatever the order in the JSON.
        ([rule("$everyone", "ALLOW"), rule("$everyone", "DENY")], "find", ANON, False, Verdict.DENY),
        ([rule("$everyone", "DENY"), rule("$everyone", "ALLOW")], "find", ANON, False, Verdict.DENY),
        # Role specificity: a named role > $owner > $authenticated > $everyone.
        ([DENY_ALL, rule("admin", "ALLOW")], "deleteById", ADMIN, False, Verdict.ALLOW),
        ([rule("admin", "DENY"), rule("$authenticated", "ALLOW")], "find", ADMIN, False, Verdict.DENY),
        ([rule("$authenticated", "DENY"), rule("$everyone", "ALLOW")], "find", ALICE, False, Verdict.DENY),
        ([rule("$authenticated", "DENY"), rule("$everyone", "ALLOW")], "find", ANON, False, Verdict.ALLOW),
        ([rule("$unauthenticated", "DENY")], "find", ANON, False, Verdict.DENY),
        ([rule("$unauthenticated", "DENY")], "find", ALICE, False, Verdict.ALLOW),
        ([rule("$authenticated", "DENY"), rule("$owner", "ALLOW")], "find", ALICE, True, Verdict.ALLOW),
        # ... but property specificity outweighs role specificity.
        (
            [rule("admin", "ALLOW"), rule("$everyone", "DENY", prop="find")],
            "find",
            ADMIN,
            False,
            Verdict.DENY,
        ),
        # A USER rule outranks any ROLE rule.
        ([rule("admin", "ALLOW"), rule("root", "DENY", kind="USER")], "find", ADMIN, False, Verdict.DENY),
        ([DENY_ALL, rule("alice", "ALLOW", kind="USER")], "find", ALICE, False, Verdict.ALLOW),
        # EXECUTE matches every access type; WRITE does not match READ.
        ([DENY_ALL, rule("$everyone", "ALLOW", "EXECUTE")], "find", ANON, False, Verdict.ALLOW),
        ([DENY_ALL, rule("$everyone", "ALLOW", "WRITE")], "find", ANON, False, Verdict.DENY),
        # A list of properties, and LoopBack's method aliases.
        ([DENY_ALL, rule("$everyone", "ALLOW", prop=["find", "count"])], "count", ANON, False, Verdict.ALLOW),
        (
            [DENY_ALL, rule("$everyone", "ALLOW", prop=["find", "count"])],
            "findOne",
            ANON,
            False,
            Verdict.DENY,
        ),
        ([DENY_ALL, rule("$everyone", "ALLOW", prop="upsert")], "patchOrCreate", ANON, False, Verdict.ALLOW),
        ([rule("$everyone", "DENY", prop="updateAttributes")], "patchAttributes", ANON, False, Verdict.DENY),
        # A rule for another method does not apply; neither do rules for others' roles.
        ([rule("$everyone", "DENY", prop="create")], "find", ANON, False, Verdict.ALLOW),
        ([rule("admin", "DENY")], "find", ALICE, False, Verdict.ALLOW),
        ([rule("$related", "DENY")], "find", ALICE, True, Verdict.ALLOW),
    ],
)
def test_resolution(
    acls: list[AclEntry], method: str, subject: Subject, owner: bool, expected: Verdict
) -> None:
    assert resolve(acls, METHODS[method], subject, is_owner=owner).verdict is expected


def test_scores_order_as_loopback_orders_them() -> None:
    find = METHODS["find"]
    ordered = [
        rule("$everyone", "ALLOW"),
        rule("$everyone", "DENY"),
        rule("$authenticated", "ALLOW"),
        rule("$owner", "ALLOW"),
        rule("admin", "ALLOW"),
        rule("alice", "ALLOW", kind="USER"),
        rule("$everyone", "ALLOW", "READ"),
        rule("$everyone", "ALLOW", "*", "find"),
    ]
    scores = [matching_score(r, find) for r in ordered]
    assert scores == sorted(scores)
    assert len(set(scores)) == len(scores)
    assert matching_score(rule("$everyone", "ALLOW", "WRITE"), find) == -1


NOTES = (
    DENY_ALL,
    rule("$authenticated", "ALLOW", "EXECUTE", "create"),
    rule("$owner", "ALLOW"),
    rule("admin", "ALLOW"),
)


@pytest.mark.parametrize(
    ("method", "subject", "grant", "privileged"),
    [
        ("find", ANON, Grant.NONE, False),
        ("find", ALICE, Grant.OWN, False),
        ("find", ADMIN, Grant.ALL, True),
        ("create", ANON, Grant.NONE, False),
        ("create", ALICE, Grant.ALL, False),
        # The create-specific $authenticated rule outranks admin's `*` rule, so admin creates as a member.
        ("create", ADMIN, Grant.ALL, False),
        ("deleteById", ALICE, Grant.OWN, False),
        ("createChangeStream", ALICE, Grant.OWN, False),
    ],
)
def test_owner_decisions(method: str, subject: Subject, grant: Grant, privileged: bool) -> None:
    decision = decide(NOTES, METHODS[method], subject)
    assert (decision.grant, decision.privileged) == (grant, privileged)


def test_an_owner_deny_under_a_broad_allow_grants_only_others_rows() -> None:
    acls = (rule("$authenticated", "ALLOW"), rule("$owner", "DENY", "WRITE"))
    assert decide(acls, METHODS["patchAttributes"], ALICE).grant is Grant.OTHERS
    assert decide(acls, METHODS["find"], ALICE).grant is Grant.ALL


def test_every_rest_method_has_loopbacks_access_type() -> None:
    reads = {name for name, method in METHODS.items() if method.access_type == "READ"}
    assert reads == {"find", "findById", "findOne", "count", "exists", "createChangeStream"}
    writes = {name for name, method in METHODS.items() if method.access_type == "WRITE"}
    assert writes == {
        "create",
        "patchOrCreate",
        "replaceOrCreate",
        "upsertWithWhere",
        "replaceById",
        "patchAttributes",
        "updateAll",
        "deleteById",
    }
