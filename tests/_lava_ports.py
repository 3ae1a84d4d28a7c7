"""Stand-ins for a Lava process model's ports, so a test can call its ``run_spk`` directly:
``recv`` returns what the test put in ``data``, ``send`` keeps a copy in ``sent``."""

import numpy as np


class FakeInPort:
    def __init__(self):
        self.data = None

    def recv(self):
        return self.data


class FakeOutPort:
    def __init__(self):
        self.sent = None

    def send(self, x):
        self.sent = np.array(x)
