"""rlcam: see what a reinforcement-learning agent looks at.

from rlcam import load_agent, Explainer
agent = load_agent("agents/breakout_ppo.zip")
with Explainer(agent) as explainer:
    explanation = explainer.explain(obs)  # obs (N, 4, 84, 84) uint8
"""

__version__ = "0.1.0"  # before the imports: rlcam.record reads it

from rlcam.agents import Agent, load_agent
from rlcam.api import ExplainedPolicy, as_agent
from rlcam.callback import AttentionCallback
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer, Explanation
from rlcam.notebook import Clip, Frame, annotate_frame, record_clip
from rlcam.record import RecordConfig, RecordResult, record
from rlcam.wrappers import RecordAttention, VecAttentionRecorder

__all__ = [
    "Agent",
    "AttentionCallback",
    "Clip",
    "ExplainedPolicy",
    "Explainer",
    "Explanation",
    "Frame",
    "RecordAttention",
    "RecordConfig",
    "RecordResult",
    "RlcamError",
    "VecAttentionRecorder",
    "annotate_frame",
    "as_agent",
    "load_agent",
    "record",
    "record_clip",
    "__version__",
]
