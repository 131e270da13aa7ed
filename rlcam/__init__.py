"""rlcam: see what a reinforcement-learning agent looks at.

from rlcam import load_agent, Explainer
agent = load_agent("agents/breakout_ppo.zip")
with Explainer(agent) as explainer:
    explanation = explainer.explain(obs)  # obs (N, 4, 84, 84) uint8
"""

__version__ = "0.1.0"  # before the imports: rlcam.record reads it

from rlcam.agents import Agent, load_agent
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer, Explanation
from rlcam.record import RecordConfig, RecordResult, record

__all__ = [
    "Agent",
    "Explainer",
    "Explanation",
    "RecordConfig",
    "RecordResult",
    "RlcamError",
    "load_agent",
    "record",
    "__version__",
]
