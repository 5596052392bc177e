"""A host's JSON `snapshots` are the ids its provider holds now: never a deleted one, never
one of an earlier host of the same name."""

from __future__ import annotations

import time


def test_a_new_host_of_an_old_name_does_not_inherit_its_snapshots(mngr) -> None:
    assert mngr("host", "create", "h").exit_code == 0
    made = mngr("host", "snapshot", "create", "h", "-n", "one", "-f", "json").json()
    snap_id = made["snapshots"][0]["id"]
    assert mngr("host", "show", "h", "-f", "json").json()["host"]["snapshots"] == [snap_id]
    assert mngr("host", "destroy", "h", "--yes").exit_code == 0
    time.sleep(1.1)  # the new host is younger than the snapshot, to the second
    assert mngr("host", "create", "h").exit_code == 0
    [host] = mngr("host", "list", "-f", "json").json()["hosts"]
    assert host["snapshots"] == []
    assert mngr("host", "show", "h", "-f", "json").json()["host"]["snapshots"] == []
    listed = mngr("host", "snapshot", "list", "-f", "json").json()["snapshots"]
    assert [s["id"] for s in listed] == [snap_id]  # it still exists, as no host's
