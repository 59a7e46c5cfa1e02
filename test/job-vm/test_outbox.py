#!/usr/bin/python3
"""The slot's outbox is not a store: outcomes and handoff logs nobody collected (a handoff that
gave up 8 s after its cancel request, or was killed; a GitHub input's outcome, which nothing
reads) are removed an hour on, when the slot writes its next outcome. The real launcher
(salt/runner/files/ci-job-slot) imported as a module, its outbox in a temporary directory.
"""
import io
import json
import os
import shutil
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from load_script import LAUNCHER, load  # noqa: E402
from launcher_config import base_config  # noqa: E402

slot_mod = load("ci_job_slot_outbox", LAUNCHER)
HOUR = slot_mod.OUTBOX_KEEP_SECONDS


class Outbox(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        cfg = slot_mod.load_config(base_config(self.tmp))
        self.slot = slot_mod.Slot(cfg, 0)
        slot_mod.ensure_dirs(self.slot)
        saved = slot_mod._events_file
        self.events = io.StringIO()
        slot_mod._events_file = self.events
        self.addCleanup(lambda: setattr(slot_mod, "_events_file", saved))

    def put(self, name, age, content="x"):
        path = os.path.join(self.slot.outbox, name)
        with open(path, "w") as f:
            f.write(content)
        t = time.time() - age
        os.utime(path, (t, t))
        return path

    def test_uncollected_files_older_than_an_hour_go_when_the_next_outcome_is_written(self):
        self.assertEqual(HOUR, 3600)
        self.put("handoff-1-2-ab.exit", HOUR + 60, "143 cancelled\n")  # a handoff that gave up
        self.put("handoff-1-2-ab.log", HOUR + 60, "job output " * 1000)
        self.put("gh-job-7.exit", HOUR + 1, "0 exited\n")  # a GitHub input's: no reader
        self.put("gh-job-8.exit", HOUR - 60, "0 exited\n")  # younger: kept
        self.put("handoff-3-4-cd.log", HOUR - 60)  # a log still being collected: kept
        os.symlink("/etc/passwd", os.path.join(self.slot.outbox, "odd.exit"))  # never followed, not ours
        os.utime(os.path.join(self.slot.outbox, "odd.exit"), (0, 0), follow_symlinks=False)
        slot_mod.write_outcome(self.slot, "gh-job-9", 0, "exited")
        self.assertEqual(sorted(os.listdir(self.slot.outbox)), ["gh-job-8.exit", "gh-job-9.exit", "handoff-3-4-cd.log", "odd.exit"])
        self.assertTrue(os.path.exists("/etc/passwd"))
        events = [json.loads(line) for line in self.events.getvalue().splitlines()]
        self.assertEqual([(e["event"], e.get("files")) for e in events], [("outcome", None), ("outbox-pruned", 3)])

    def test_the_outcome_just_written_and_its_log_stay_however_old_their_name(self):
        # A job longer than the hour: its log was opened more than an hour before its outcome.
        self.put("handoff-5-6-ef.log", HOUR * 5)
        slot_mod.write_outcome(self.slot, "handoff-5-6-ef", 0, "exited")
        self.assertEqual(sorted(os.listdir(self.slot.outbox)), ["handoff-5-6-ef.exit", "handoff-5-6-ef.log"])
        self.assertNotIn("outbox-pruned", self.events.getvalue())

    def test_a_file_collected_meanwhile_is_no_error(self):
        path = self.put("handoff-7-8-aa.exit", HOUR * 2)
        real_lstat = os.lstat

        def racing_lstat(p, *a, **kw):
            st = real_lstat(p, *a, **kw)
            if p == path:
                os.unlink(path)  # its handoff takes it between the listing and the unlink
            return st
        os.lstat = racing_lstat
        try:
            slot_mod.write_outcome(self.slot, "gh-job-10", 0, "exited")
        finally:
            os.lstat = real_lstat
        self.assertEqual(os.listdir(self.slot.outbox), ["gh-job-10.exit"])


    def test_a_file_that_cannot_be_removed_fails_neither_the_outcome_nor_the_slot(self):
        stuck = self.put("handoff-9-9-bb.log", HOUR * 2)
        self.put("gh-job-11.exit", HOUR * 2)
        real_unlink = os.unlink

        def refusing_unlink(p, *a, **kw):
            if p == stuck:
                raise PermissionError(1, "Operation not permitted")  # e.g. an immutable file
            return real_unlink(p, *a, **kw)
        os.unlink = refusing_unlink
        try:
            slot_mod.write_outcome(self.slot, "gh-job-12", 0, "exited")
        finally:
            os.unlink = real_unlink
        with open(os.path.join(self.slot.outbox, "gh-job-12.exit")) as f:
            self.assertEqual(f.read(), "0 exited\n")
        self.assertEqual(sorted(os.listdir(self.slot.outbox)), ["gh-job-12.exit", "handoff-9-9-bb.log"])
        pruned = [json.loads(line) for line in self.events.getvalue().splitlines()][-1]
        self.assertEqual({k: pruned[k] for k in ("event", "files", "failed", "why")},
                         {"event": "outbox-pruned", "files": 1, "failed": 1, "why": "Operation not permitted"})

if __name__ == "__main__":
    unittest.main()
