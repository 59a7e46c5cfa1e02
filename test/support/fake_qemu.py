"""A stand-in for the QEMU process the launcher starts (what its Vm needs of a Popen): alive
until killed or until the fake guest powers it off. `killed` is set when the launcher kills it."""
import os
import threading


class FakeQemu:
    def __init__(self):
        self.pid = os.getpid()
        self.returncode = None
        self.killed = threading.Event()
        self.lock = threading.Lock()

    def poll(self):
        return self.returncode

    def kill(self):
        with self.lock:
            if self.returncode is None:
                self.returncode = -9
        self.killed.set()

    def poweroff(self):
        with self.lock:
            if self.returncode is None:
                self.returncode = 0

    def wait(self, timeout=None):
        return self.returncode
