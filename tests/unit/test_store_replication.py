"""The replication commands: their calls, and the decoding of their replies (bytes or text)."""

from __future__ import annotations

from genq.common.store import replication


def test_role_reads_the_first_element_of_role() -> None:
    command = replication.role()
    assert command.calls == (("ROLE",),)
    assert command.reply([[b"slave", b"10.0.0.1", 6379, b"connected", 42]]) == "slave"
    assert command.reply([["master", 42, []]]) == replication.PRIMARY_ROLE


def test_primary_address_is_none_for_a_name_no_sentinel_monitors() -> None:
    command = replication.primary_address("genq")
    assert command.calls == (("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "genq"),)
    assert command.reply([[b"198.18.0.2", b"6379"]]) == ("198.18.0.2", 6379)
    assert command.reply([None]) is None
