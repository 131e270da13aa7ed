"""An image env that raises on its 10th step: for the recorder's env-failure handling."""

import gymnasium as gym

from rlcam.toyenv import FindTarget

FAIL_AT = 10


class FailingFindTarget(FindTarget):
    def step(self, action):
        if self.t + 1 == FAIL_AT:
            raise RuntimeError("simulated emulator crash")
        return super().step(action)


gym.register(id="FailingFindTarget-v0", entry_point=FailingFindTarget, max_episode_steps=1000)
