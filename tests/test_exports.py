"""The public surface is small and deliberate: adding a name to ``rlcam.__all__`` is a decision."""

import rlcam


def test_all_is_exactly_the_public_api():
    assert sorted(rlcam.__all__) == sorted(
        [
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
    )


def test_every_exported_name_exists_and_belongs_to_rlcam():
    for name in rlcam.__all__:
        value = getattr(rlcam, name)
        if name != "__version__":
            assert value.__module__.startswith("rlcam."), name
