"""Command line: argument parsing only; the work is done by the functions it calls.

Exit codes: 0 done, 2 bad input (one sentence on stderr), 1 an unexpected error (a bug) or,
for ``rlcam check``, a regression; 130 interrupted (the outputs hold the steps done so far).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from threadpoolctl import threadpool_limits

from rlcam.errors import RlcamError

EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_REGRESSION = 1  # rlcam check: the agent regressed

DEFAULT_AGENT_DIR = Path(__file__).resolve().parent.parent / "agents"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every bad input takes the same path."""

    def error(self, message):
        raise RlcamError(f"{message} (see '{self.prog} --help').")


def default_agent(env: str) -> Path:
    """The shipped agent for ``env``: ``agents/<game>_*.zip`` beside the package (a source checkout)."""
    game = env.split(":")[-1].split("/")[-1].split("NoFrameskip")[0].split("-")[0].lower()
    found = sorted(DEFAULT_AGENT_DIR.glob(f"{game}_*.zip")) if DEFAULT_AGENT_DIR.is_dir() else []
    preferred = [p for p in found if "_ppo" in p.stem] or found
    if not preferred:
        raise RlcamError(f"no shipped agent for env {env!r} in {DEFAULT_AGENT_DIR}; pass --agent PATH.zip.")
    return preferred[0]


def _add_trust(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust",
        action="store_true",
        help="allow SB3's full load of the agent, which unpickles it (runs code in it): only for files you trust",
    )


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="cpu",
        metavar="auto|cpu|cuda|cuda:N",
        help="where the maps are computed (default cpu; auto: cuda where torch sees a GPU, else cpu)",
    )


def _add_custom_objects(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--custom-objects",
        action="append",
        default=[],
        metavar="KEY=module:Class",
        help="a class of your own code for one the agent pickled, e.g. features_extractor_class=mycode.nets:CNN "
        "(KEY: policy_class or a policy_kwargs key; repeatable): loads custom agents without --trust",
    )


def _custom_objects(args) -> dict[str, str] | None:
    """--custom-objects KEY=module:Class items as the dict load_agent takes."""
    custom = {}
    for item in args.custom_objects:
        key, sep, spec = item.partition("=")
        if not (sep and key and ":" in spec):
            raise RlcamError(
                f"--custom-objects takes KEY=module:Class (e.g. features_extractor_class=mycode:CNN), not {item!r}."
            )
        custom[key] = spec
    return custom or None


def _add_zoo(parser: argparse.ArgumentParser) -> None:
    """rl-zoo's way of naming a run: -f LOGS --algo A --env ID [--exp-id N] [--load-best | --load-checkpoint N]."""
    parser.add_argument(
        "-f",
        "--folder",
        type=Path,
        help="rl-zoo log folder: the agent is the run <folder>/<algo>/<env>_<exp-id> (needs --algo and --env)",
    )
    parser.add_argument("--exp-id", type=int, help="with -f: the run number (default 0: the latest run)")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--load-best", action="store_true", help="a run's best_model.zip instead of its final model")
    pick.add_argument("--load-checkpoint", type=int, metavar="N", help="a run's rl_model_N_steps.zip")


def _agent_path(args) -> Path | None:
    """--agent, or the run -f/--algo/--env/--exp-id name, with --load-best/--load-checkpoint applied."""
    from rlcam.zoo import pick_model, run_folder

    if args.folder is not None:
        if args.agent is not None:
            raise RlcamError("give --agent or -f/--folder, not both.")
        if not args.algo or not args.env:
            raise RlcamError("-f/--folder needs --algo and --env to find the run, e.g. -f logs --algo ppo --env ID.")
        agent = run_folder(args.folder, args.algo, args.env, args.exp_id or 0)
    elif args.exp_id is not None:
        raise RlcamError("--exp-id picks a run inside -f/--folder; give -f too.")
    else:
        agent = args.agent
    if agent is None:
        if args.load_best or args.load_checkpoint is not None:
            raise RlcamError("--load-best and --load-checkpoint pick a model in a run folder; give --agent or -f.")
        return None
    return pick_model(agent, best=args.load_best, checkpoint=args.load_checkpoint)


def build_parser() -> argparse.ArgumentParser:
    from rlcam.agents import ALGOS
    from rlcam.cam import METHODS
    from rlcam.geometry import PLACEMENTS
    from rlcam.norm import NORMS

    parser = _Parser(prog="rlcam", description="See what a Stable-Baselines3 pixel agent looks at (Grad-CAM).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    rec = sub.add_parser(
        "record",
        help="run an agent and write an annotated attention video plus a trace",
        description=(
            "Run a saved SB3 agent in its env, compute a Grad-CAM map for every action it takes, and "
            "stream the annotated video (MP4 or GIF) and a trace (.npz) of the raw maps."
        ),
        epilog="example: rlcam record --env Breakout --agent agents/breakout_ppo.zip --steps 1000 --out breakout.mp4",
    )
    rec.add_argument(
        "--env",
        help="short Atari name, Gymnasium id or module:EnvId-v0 (default: a run folder's own env, else Breakout)",
    )
    rec.add_argument(
        "--agent",
        type=Path,
        help="SB3 agent zip or rl-zoo run folder, e.g. logs/ppo/BreakoutNoFrameskip-v4_1 "
        "(default: the agent shipped in agents/ for --env)",
    )
    _add_zoo(rec)
    rec.add_argument(
        "--frame-stack",
        type=int,
        metavar="K",
        help="frames stacked per observation (default: a run's own; Atari: the agent's depth; else none)",
    )
    length = rec.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="agent steps to record (default 1000)")
    length.add_argument("--episodes", type=int, help="record until this many full games have ended")
    rec.add_argument("--seed", type=int, default=0, help="env and sampling seed (default 0)")
    mode = rec.add_mutually_exclusive_group()
    mode.add_argument(
        "--deterministic",
        dest="deterministic",
        action="store_true",
        default=True,
        help="take the argmax action (default)",
    )
    mode.add_argument(
        "--stochastic",
        dest="deterministic",
        action="store_false",
        help="sample actions (softmax for PPO/A2C, epsilon-greedy for DQN), seeded",
    )
    rec.add_argument("--out", type=Path, default=Path("rlcam.mp4"), help="video path, .mp4 or .gif (default rlcam.mp4)")
    rec.add_argument("--trace", type=Path, help="trace path (.npz); default: the video's path with .npz")
    rec.add_argument("--save-obs", action="store_true", help="store the exact policy inputs in the trace")
    rec.add_argument(
        "--all-actions",
        action="store_true",
        help="also map every action: a grid of per-action maps under the video (one shared scale), "
        "action_cams in the trace",
    )
    rec.add_argument(
        "--target",
        help="explained score: logit|logprob|value (PPO/A2C, default logit), q|advantage (DQN, default q), "
        "or contrast:ACTION (the chosen action's score minus ACTION's, by index or name, e.g. contrast:LEFT)",
    )
    rec.add_argument("--layer", help="module path inside model.policy (see 'rlcam info'); default: last rectified conv")
    rec.add_argument("--method", default="gradcam", choices=sorted(METHODS), help="map method (default gradcam)")
    rec.add_argument(
        "--placement",
        default="bilinear",
        choices=PLACEMENTS,
        help="how layer cells land on the input: bilinear (paper) or rf (receptive-field centres)",
    )
    rec.add_argument("--norm", default="running", choices=NORMS, help="display normalisation (default running)")
    rec.add_argument("--n-envs", type=int, default=1, help="envs explained together in one batch; video shows env 0")
    rec.add_argument("--fps", type=int, default=30, help="video frame rate (default 30)")
    rec.add_argument(
        "--scale", type=int, default=None, help="integer upscaling of the frame (default: a ~630 px view; 3 for Atari)"
    )
    rec.add_argument("--alpha", type=float, default=0.6, help="map opacity at full attention (default 0.6)")
    rec.add_argument("--algo", choices=ALGOS, help="force the algorithm (normally detected)")
    rec.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_trust(rec)
    _add_custom_objects(rec)
    _add_device(rec)
    rec.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest at batch 1)")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.add_argument(
        "--report",
        action="store_true",
        help="also write the interactive HTML report beside the video (same stem, .html; see 'rlcam report')",
    )

    chk = sub.add_parser(
        "check",
        help="compare a new agent with a baseline trace; exit 1 on regression",
        description=(
            "Replay a baseline trace (written by 'rlcam record') with a new agent and compare actions, maps and "
            "attention on game objects. Exit 0 within thresholds, 1 on regression, 2 on bad input."
        ),
        epilog="example: rlcam check --agent new.zip --baseline base.npz --max-attention-drop 0.5 --junit check.xml",
    )
    chk.add_argument("--agent", type=Path, required=True, help="the SB3 agent zip to check")
    chk.add_argument("--baseline", type=Path, required=True, help="a trace written by rlcam record")
    chk.add_argument(
        "--mode",
        choices=["replay", "own"],
        default="replay",
        help="replay: step with the baseline's actions, compare per step (default); "
        "own: the new agent acts itself, compare return and attention",
    )
    chk.add_argument("--spec", type=Path, help="thresholds from a JSON or TOML file (flags override it)")
    chk.add_argument("--min-action-agreement", type=float)
    chk.add_argument("--min-map-correlation", type=float, help="median Spearman correlation of the maps")
    chk.add_argument("--min-top-iou", type=float, help="mean IoU of the maps' top pixels")
    chk.add_argument("--top-fraction", type=float, help="share of pixels counted as a map's top (default 0.1)")
    chk.add_argument(
        "--min-attention",
        action="append",
        default=[],
        metavar="OBJECT=SHARE",
        help="least mean share of map mass near an object, e.g. ball=0.02 (repeatable; last-conv maps are "
        "coarse: the shipped agent has 0.026)",
    )
    chk.add_argument("--max-attention-drop", type=float, help="allowed relative drop from the baseline's share")
    chk.add_argument("--radius", type=float, help="px around an object counted as near it (default 10)")
    chk.add_argument("--max-return-drop", type=float, help="own mode: allowed relative drop of the return")
    _add_trust(chk)
    _add_custom_objects(chk)
    _add_device(chk)
    chk.add_argument("--json", type=Path, help="write the full report as JSON")
    chk.add_argument("--junit", type=Path, help="write a JUnit XML report for CI")

    san = sub.add_parser(
        "sanity",
        help="model-randomisation sanity check of the maps (Adebayo et al. 2018)",
        description=(
            "Re-initialise the agent's layers one by one from the output down (cascading) and report how far the "
            "maps move from the intact agent's (Spearman rank correlation). Exit 0 if they decorrelate, 1 if not."
        ),
    )
    san.add_argument("--agent", type=Path, required=True, help="SB3 agent zip")
    san.add_argument("--env", help="env the observations come from (default: a run folder's own env, else Breakout)")
    san.add_argument("--steps", type=int, default=64, help="observations from this many agent steps (default 64)")
    san.add_argument("--seed", type=int, default=0)
    san.add_argument("--target", help="explained score (default per algorithm)")
    san.add_argument("--layer", help="explained layer (default: last rectified conv)")
    san.add_argument("--method", default="gradcam", choices=sorted(METHODS))
    san.add_argument("--json", type=Path, help="write the curve as JSON")
    _add_trust(san)
    _add_custom_objects(san)

    info = sub.add_parser(
        "info",
        help="describe an agent zip: algorithm, spaces, candidate layers",
        description="Print an agent's algorithm, spaces, default target and layer, and candidate layers.",
    )
    info.add_argument("--agent", type=Path, help="SB3 agent zip or rl-zoo run folder")
    info.add_argument("--env", help="with -f: the run's env id (module:EnvId-v0 imports module first)")
    _add_zoo(info)
    info.add_argument("--algo", choices=ALGOS, help="force the algorithm")
    _add_trust(info)
    _add_custom_objects(info)
    _add_audit(sub, METHODS, PLACEMENTS)
    _add_report(sub)
    _add_compare(sub, METHODS)
    return parser


def _add_compare(sub, methods) -> None:
    cmp = sub.add_parser(
        "compare",
        help="two agents (or one under two methods/targets) on the same seed, side by side",
        description=(
            "Run two explained agents on the same seed and write one side-by-side video, a trace per side and, "
            "with --report, one HTML report with a divergence track. replay (default): the first agent acts and "
            "the second explains the same frames (per step: action agreement, map rank correlation, top-10%% "
            "overlap); own: each plays its own game."
        ),
        epilog="example: rlcam compare --agent old.zip --agent new.zip --steps 500 --out cmp.mp4 --report",
    )
    cmp.add_argument(
        "--agent",
        type=Path,
        action="append",
        required=True,
        help="agent zip (give it twice, or once with two --method or --target values)",
    )
    cmp.add_argument("--env", help="env both play (default: a run folder's own env, else Breakout)")
    cmp.add_argument("--steps", type=int, default=500, help="agent steps (default 500)")
    cmp.add_argument("--mode", choices=["replay", "own"], default="replay", help="replay (default) or own")
    cmp.add_argument("--target", action="append", default=[], help="explained score, per side (repeatable)")
    cmp.add_argument("--method", action="append", default=[], choices=sorted(methods), help="map method, per side")
    cmp.add_argument("--layer", action="append", default=[], help="explained layer, per side (repeatable)")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--stochastic", dest="deterministic", action="store_false", help="sample actions, seeded")
    cmp.add_argument("--norm", default="running", choices=["running", "episode", "frame"])
    cmp.add_argument("--out", type=Path, default=Path("compare.mp4"), help="video path (default compare.mp4)")
    cmp.add_argument("--report", action="store_true", help="also write the HTML report (the video's stem, .html)")
    cmp.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    cmp.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_trust(cmp)


def _add_report(sub) -> None:
    rep = sub.add_parser(
        "report",
        help="write an interactive HTML inspector of a recorded run",
        description=(
            "Write one self-contained HTML page (no server, no network) to inspect a trace written by "
            "'rlcam record': the frame with its map (normalisation and overlay switchable), a timeline of value, "
            "probabilities, reward and attention, every action's map, and the moments worth a look. The frames "
            "are rebuilt by replaying the trace's actions in its env, checked step by step against the trace."
        ),
        epilog="example: rlcam report run.npz --out run.html   (then open run.html#step=137)",
    )
    rep.add_argument("trace", type=Path, help="trace (.npz) written by rlcam record")
    rep.add_argument("--out", type=Path, help="page path (default: the trace's path with .html)")
    rep.add_argument(
        "--video",
        type=Path,
        help="the run's video, linked from the page and checked to have one frame per step "
        "(default: the trace's sibling .mp4 if there is one)",
    )
    rep.add_argument("--env-index", type=int, default=0, help="which env of a --n-envs trace to show (default 0)")
    rep.add_argument("--overwrite", action="store_true", help="replace an existing page")


def _add_audit(sub, methods, placements) -> None:
    from rlcam.audit import DEFAULT_MAX_STEPS

    aud = sub.add_parser(
        "audit",
        help="run many checkpoints x seeds (a process pool or Ray), write results.csv and summary.html",
        description=(
            "Play every checkpoint with every seed, explain every step, and measure each run: return, action "
            "entropy, map concentration, attention on the game's objects, and with --baseline the rlcam check "
            "verdict. One job per (checkpoint, seed) on a local process pool or a Ray cluster; rerunning the same "
            "command skips the jobs already complete. Exit 0 all jobs ok, 1 a job failed or a check regressed."
        ),
        epilog="example: rlcam audit --folder runs/ppo_breakout --env Breakout --seeds 0-4 --episodes 1 --out audit",
    )
    aud.add_argument("checkpoints", nargs="*", type=Path, help="SB3 agent zips")
    aud.add_argument(
        "--folder",
        action="append",
        type=Path,
        default=[],
        help="a folder of checkpoints: SB3 CheckpointCallback's <prefix>_<N>_steps.zip and/or an rl-zoo run "
        "(<env>.zip, best_model.zip, rl_model_<N>_steps.zip); repeatable",
    )
    aud.add_argument("--env", help="env the checkpoints play (default: an rl-zoo run folder's <env>_<N> name)")
    aud.add_argument("--seeds", default="0-2", help="seeds per checkpoint: 0-4, 0,3,7 (default 0-2)")
    length = aud.add_mutually_exclusive_group()
    length.add_argument("--episodes", type=int, help="full games per job (default 1)")
    length.add_argument("--steps", type=int, help="agent steps per job, instead of games")
    aud.add_argument(
        "--max-steps",
        type=int,
        default=DEFAULT_MAX_STEPS,
        help=f"with --episodes: stop a job after this many steps (default {DEFAULT_MAX_STEPS}; the row says truncated)",
    )
    mode = aud.add_mutually_exclusive_group()
    mode.add_argument(
        "--stochastic",
        dest="deterministic",
        action="store_false",
        default=False,
        help="sample actions, seeded (default: with argmax actions Breakout's seeds often play identical games)",
    )
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", help="take the argmax action")
    aud.add_argument("--target", help="explained score (default per algorithm, as rlcam record)")
    aud.add_argument("--layer", help="module path inside model.policy (default: last rectified conv)")
    aud.add_argument("--method", default="gradcam", choices=sorted(methods), help="map method (default gradcam)")
    aud.add_argument("--placement", default="bilinear", choices=placements, help="bilinear (default) or rf")
    aud.add_argument("--radius", type=float, default=10.0, help="px around an object counted as near it (default 10)")
    aud.add_argument("--baseline", type=Path, help="a trace written by rlcam record: rlcam check each checkpoint")
    aud.add_argument("--spec", type=Path, help="the check's thresholds, JSON or TOML (as rlcam check --spec)")
    aud.add_argument("--check-mode", choices=["replay", "own"], default="replay", help="as rlcam check --mode")
    aud.add_argument("--videos", action="store_true", help="also write each job's annotated MP4")
    aud.add_argument("--workers", type=int, help="local worker processes, or a local Ray's CPUs (default: CPUs)")
    aud.add_argument("--ray", action="store_true", help="run the jobs as Ray tasks (RAY_ADDRESS, else a local Ray)")
    aud.add_argument("--ray-address", help="the Ray cluster to run on (implies --ray)")
    aud.add_argument("--out", type=Path, default=Path("audit"), help="output folder (default audit)")
    aud.add_argument("--overwrite", action="store_true", help="discard the folder's earlier results and start again")
    aud.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_trust(aud)
    _add_device(aud)


def _progress(stream):
    started = time.perf_counter()

    def show(done: int, total: int | None) -> None:
        if done % 10 and done != total:
            return
        rate = done / max(time.perf_counter() - started, 1e-9)
        if total:
            filled = int(30 * done / total)
            stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} steps  {rate:.0f} steps/s")
        else:
            stream.write(f"\r{done} steps  {rate:.0f} steps/s")
        stream.flush()

    return show


def cmd_record(args) -> int:
    import torch

    from rlcam.record import RecordConfig, record

    if args.threads < 1:
        raise RlcamError(f"--threads must be at least 1, not {args.threads}.")
    torch.set_num_threads(args.threads)

    cfg = RecordConfig(
        agent=_agent_path(args) or default_agent(args.env or "Breakout"),
        env=args.env,
        frame_stack=args.frame_stack,
        out=args.out,
        trace=args.trace,
        steps=args.steps,
        episodes=args.episodes,
        seed=args.seed,
        deterministic=args.deterministic,
        target=args.target,
        layer=args.layer,
        method=args.method,
        placement=args.placement,
        norm=args.norm,
        n_envs=args.n_envs,
        save_obs=args.save_obs,
        all_actions=args.all_actions,
        fps=args.fps,
        scale=args.scale,
        alpha=args.alpha,
        overwrite=args.overwrite,
        algo=args.algo,
        trust=args.trust,
        custom_objects=_custom_objects(args),
        device=args.device,
    )
    page = None
    if args.report:
        from rlcam.report import check_output

        page = cfg.out.with_suffix(".html")
        check_output(page, args.overwrite)  # before the run, not after it
    show = None if args.quiet or not sys.stderr.isatty() else _progress(sys.stderr)
    result = record(cfg, on_step=show)
    if show is not None:
        sys.stderr.write("\n")
    state = "interrupted after" if result.interrupted else "recorded"
    print(
        f"{state} {result.steps} steps ({result.episodes} games ended) in {result.seconds:.1f} s: "
        f"video {result.video}, trace {result.trace}"
    )
    for warning in result.warnings:
        print(f"rlcam: warning: {warning}", file=sys.stderr)
    if page is not None and result.steps:
        from rlcam.report import write_report

        written = write_report(result.trace, page, video=result.video, overwrite=args.overwrite)
        print(f"report {written.path} ({written.bytes / 1e6:.1f} MB)")
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK


def cmd_compare(args) -> int:
    import torch

    from rlcam.compare import CompareConfig, Side, compare

    torch.set_num_threads(1)
    per_side = {"agent": args.agent, "target": args.target, "method": args.method, "layer": args.layer}
    if any(len(v) > 2 for v in per_side.values()) or max(len(v) for v in per_side.values()) < 2:
        raise RlcamError(
            "compare needs two sides: give --agent twice, or one --agent with two --method, --target or --layer values."
        )

    def side(i: int) -> dict:
        return {k: v[i] if len(v) == 2 else (v[0] if v else None) for k, v in per_side.items()}

    sides = [Side(**{k: v for k, v in side(i).items() if v is not None}) for i in range(2)]
    cfg = CompareConfig(
        sides=sides,
        env=args.env,
        steps=args.steps,
        out=args.out,
        mode=args.mode,
        seed=args.seed,
        deterministic=args.deterministic,
        norm=args.norm,
        report=args.report,
        overwrite=args.overwrite,
        trust=args.trust,
    )
    show = None if args.quiet or not sys.stderr.isatty() else _progress(sys.stderr)
    result = compare(cfg, on_step=show)
    if show is not None:
        sys.stderr.write("\n")
    print(result.text())
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK


def cmd_report(args) -> int:
    from rlcam.report import write_report

    result = write_report(args.trace, args.out, video=args.video, overwrite=args.overwrite, env_index=args.env_index)
    print(f"report {result.path}: {result.steps} steps, {result.bytes / 1e6:.1f} MB")
    return EXIT_OK


def _thresholds(args):
    from rlcam.check import Thresholds, load_spec

    thresholds = load_spec(args.spec) if args.spec else Thresholds()
    for name in (
        "min_action_agreement",
        "min_map_correlation",
        "min_top_iou",
        "top_fraction",
        "max_attention_drop",
        "radius",
        "max_return_drop",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(thresholds, name, value)
    for item in args.min_attention:
        name, sep, share = item.partition("=")
        try:
            thresholds.min_attention[name] = float(share)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise RlcamError(f"--min-attention takes OBJECT=SHARE (e.g. ball=0.2), not {item!r}.")
    return thresholds


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    tmp.replace(path)


def cmd_check(args) -> int:
    import torch

    from rlcam.agents import load_agent
    from rlcam.check import check
    from rlcam.device import resolve_device
    from rlcam.zoo import agent_and_env

    torch.set_num_threads(1)
    for path in (args.json, args.junit):
        if path is not None and not path.parent.exists():
            raise RlcamError(f"output directory {path.parent} does not exist; create it first.")
    device = resolve_device(args.device)  # before loading anything
    custom = _custom_objects(args)
    model, _ = agent_and_env(args.agent, None)  # a run folder: its model (the env is the baseline's)
    agent = load_agent(model, trust=args.trust, custom_objects=custom) if custom else model
    report = check(agent, args.baseline, _thresholds(args), mode=args.mode, trust=args.trust, device=device)
    print(report.text())
    if args.json:
        _write_atomic(args.json, report.to_json())
    if args.junit:
        _write_atomic(args.junit, report.to_junit())
    return EXIT_OK if report.passed else EXIT_REGRESSION


def cmd_sanity(args) -> int:
    import dataclasses
    import json

    import torch

    from rlcam.agents import load_agent
    from rlcam.sanity import rollout_observations, sanity
    from rlcam.zoo import agent_and_env

    torch.set_num_threads(1)
    if args.steps < 1:
        raise RlcamError(f"--steps must be a positive number of steps, not {args.steps}.")
    if args.json is not None and not args.json.parent.exists():
        raise RlcamError(f"output directory {args.json.parent} does not exist; create it first.")
    model, env = agent_and_env(args.agent, args.env)  # a run folder: its model and its training env
    agent = load_agent(model, trust=args.trust, custom_objects=_custom_objects(args))
    obs = rollout_observations(agent, env, args.steps, args.seed)
    result = sanity(agent, obs, target=args.target, layer=args.layer, method=args.method, seed=args.seed)
    print(result.text())
    if args.json:
        _write_atomic(args.json, json.dumps({**dataclasses.asdict(result), "passed": result.passed}, indent=1))
    return EXIT_OK if result.passed else EXIT_REGRESSION


def cmd_info(args) -> int:
    from rlcam.agents import load_agent
    from rlcam.coverage import sentences, unseen_in
    from rlcam.envs import describe_observations
    from rlcam.explainer import conv_layers, default_layer, key_layers
    from rlcam.families import family_for
    from rlcam.zoo import find_run

    path = _agent_path(args)
    if path is None:
        raise RlcamError("give --agent (an SB3 zip or an rl-zoo run folder) or -f LOGS --algo ALGO --env ID.")
    run = find_run(path, args.env)
    custom = _custom_objects(args)
    agent = load_agent(run.model if run else path, algo=args.algo, trust=args.trust, custom_objects=custom)
    model = agent.model
    print(f"agent        {agent.path}  (sha256 {agent.sha256[:16]}...)")
    print(f"algorithm    {agent.algo.upper()}  policy {type(model.policy).__name__}")
    print(f"observation  {model.observation_space}")
    print(f"layout       {describe_observations(model.observation_space, model.policy.normalize_images)}")
    print(f"actions      {model.action_space}")
    family = family_for(agent)
    default = family.default_target()
    print(f"family       {family.name}: explainable ({type(family).__module__})")
    print(f"targets      {', '.join(family.targets)} (default {family.describe(default)})")
    layers = conv_layers(agent)
    if layers:
        print(f"layer        {default_layer(agent)} (default)")
        print("candidates   " + "\n             ".join(layers))
        mapped = list(key_layers(agent).values()) or [default_layer(agent)]
        for sentence in sentences(unseen_in(model.policy, mapped)):
            print(f"unseen       {sentence}")
        others: dict[str, list[str]] = {}  # targets whose maps come from another extractor (a critic's)
        for target in family.all_targets():
            if family.extractor_paths(target) != family.extractor_paths(default):
                others.setdefault(default_layer(agent, target), []).append(target)
        for layer, targets in others.items():
            print(f"             {layer} (default for {', '.join(targets)})")
    else:
        print("layer        none: this policy has no conv layer, so rlcam cannot explain it")
    for line in run.describe() if run else []:
        print(line)
    return EXIT_OK


def cmd_audit(args) -> int:
    import importlib.util

    from rlcam import audit
    from rlcam.device import resolve_device

    missing = [name for name in ("tqdm", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        raise RlcamError(f"rlcam audit needs {' and '.join(missing)}: pip install 'rlcam[audit]'.")
    device = resolve_device(args.device)
    if (args.ray or args.ray_address) and device.type == "cuda":
        raise RlcamError(
            "--device cuda with --ray is not supported: rlcam's Ray tasks reserve no GPU; "
            "leave out --ray (local worker processes) or use --device cpu."
        )
    if args.ray or args.ray_address:
        executor = audit.RayExecutor(address=args.ray_address, num_cpus=args.workers)
    else:
        executor = audit.PoolExecutor(args.workers or os.cpu_count() or 1)
    zips = list(args.checkpoints) + [z for folder in args.folder for z in audit.folder_zips(folder)]
    if not zips:
        raise RlcamError("give checkpoint zips, or --folder DIR (see 'rlcam audit --help').")
    settings = audit.make_settings(
        baseline=args.baseline,
        spec=args.spec,
        env=args.env or audit.infer_env(args.folder, zips),
        episodes=args.episodes if args.episodes is not None or args.steps is not None else 1,
        steps=args.steps,
        max_steps=args.max_steps,
        deterministic=args.deterministic,
        target=args.target,
        layer=args.layer,
        method=args.method,
        placement=args.placement,
        radius=args.radius,
        videos=args.videos,
        check_mode=args.check_mode,
        trust=args.trust,
        device=args.device,
    )
    result = audit.audit(
        audit.checkpoints(zips),
        audit.parse_seeds(args.seeds),
        settings,
        args.out,
        executor,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    for line in result.lines:
        print(line)
    state = "interrupted: " if result.interrupted else ""
    print(
        f"{state}{result.ran} jobs run, {result.skipped} already complete, {len(result.failed)} failed "
        f"({executor.name}): {result.csv}, {result.html}"
    )
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_REGRESSION if result.failed or result.regressions else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also usable in-process, e.g. from tests)."""
    try:
        args = build_parser().parse_args(argv)
        # SB3 and Gymnasium warn about things the user cannot act on here (e.g. render fps).
        # numpy's BLAS gets one thread, like torch (--threads): rlcam's numpy matrices are tiny, and
        # OpenBLAS workers spinning against the agent's own work once hung a 84x84 matmul for minutes.
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            if not os.environ.get("RLCAM_WARNINGS"):
                warnings.simplefilter("ignore")
            commands = {"record": cmd_record, "check": cmd_check, "sanity": cmd_sanity, "info": cmd_info}
            commands["audit"] = cmd_audit
            commands["report"] = cmd_report
            commands["compare"] = cmd_compare
            return commands[args.command](args)
    except RlcamError as exc:
        print(f"rlcam: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except OSError as exc:  # disk full, permissions: the environment, not the input's content
        print(f"rlcam: error: {exc.strerror or exc} ({exc.filename or 'output'}).", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("rlcam: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
