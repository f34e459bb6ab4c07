"""Transfer latent actions between videos: the cycle-consistency metric and the picture.

    # the picture: A, B, B driven by A's latents, and the cycle back to A (PNG strip, GIF, MP4)
    python evals/transfer.py --checkpoint runs/tiny --video-a a.mp4 --video-b b.mp4 --out runs/tiny/transfer
    python evals/transfer.py --checkpoint runs/tiny --video-a data/mix#3 --video-b data/mix#200 --out DIR

    # the metric over many random held-out pairs of the run's data (A -> B -> A)
    python evals/transfer.py --checkpoint runs/tiny --pairs 64 --out runs/tiny/transfer

Predictions are shown through a pixel decoder: --decoder PATH, else the run's own (RUN_DIR/decoder.pt),
else one trained now on the run's training frames and saved there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lavid.core.cli import fail, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a run folder of lavid/train.py (or one checkpoint)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--video-a", help="video file, or DATASET_DIR#CLIP_INDEX: the latents come from here")
    parser.add_argument("--video-b", help="video file, or DATASET_DIR#CLIP_INDEX: the scene they are applied to")
    parser.add_argument("--start-a", type=float, default=0.0, help="seconds into video A (default 0)")
    parser.add_argument("--start-b", type=float, default=0.0, help="seconds into video B (default 0)")
    parser.add_argument("--fps", type=float, default=4.0, help="frame rate to sample video files at (default 4)")
    parser.add_argument("--horizon", type=int, default=None, help="steps to transfer (default: the whole clip)")
    parser.add_argument("--pairs", type=int, default=0, help="also measure cycle transfer over this many held-out pairs")
    parser.add_argument("--decoder", default=None, help="pixel decoder file (default: the run's own, else one trained now)")
    parser.add_argument("--decoder-steps", type=int, default=600, help="steps if a decoder must be trained")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()
    if (args.video_a is None) != (args.video_b is None):
        return fail(ValueError("give both --video-a and --video-b (or neither, with --pairs)"))
    if args.video_a is None and args.pairs <= 0:
        return fail(ValueError("nothing to do: give --video-a and --video-b, and/or --pairs N"))

    import torch

    from lavid.data.video import VideoError
    from lavid.models.decoder import DecoderError
    from lavid.training.fit_decoder import decoder_for_run
    from lavid.training.runs import RunError, load_run

    out = Path(args.out)
    try:
        loaded = load_run(args.checkpoint, args.device)
        steps = loaded.config.data.frames // loaded.config.model.encoder.tubelet
        horizon = args.horizon or steps - 1
        if not 1 <= horizon <= steps - 1:
            raise ValueError(f"--horizon must be in [1, {steps - 1}] for this run's clips of {steps} steps")
        summary: dict = {"run": str(loaded.run_dir), "checkpoint": loaded.checkpoint.name,
                         "family": loaded.config.model.latent.family}
        if args.video_a is not None:
            from lavid.metrics.transfer_viz import load_input, transfer_rows, write_transfer

            frames, size = loaded.config.data.frames, loaded.config.model.encoder.img_size
            stride = loaded.config.data.frame_stride
            clip_a = torch.from_numpy(load_input(args.video_a, frames, size, args.fps, args.start_a, stride))
            clip_b = torch.from_numpy(load_input(args.video_b, frames, size, args.fps, args.start_b, stride))
            decoder = decoder_for_run(loaded, args.decoder, args.decoder_steps, progress=not args.no_progress)
            rows, metrics = transfer_rows(loaded.model, decoder, clip_a, clip_b, horizon)
            paths = write_transfer(rows, out, title=f"{Path(args.video_a).name} -> {Path(args.video_b).name} "
                                                    f"({summary['family']}, step {loaded.step})")
            summary["pair"] = {"a": args.video_a, "b": args.video_b, **metrics}
            print(f"wrote {paths['png']}, {paths['gif']}, {paths['mp4']}; cycle/own error ratio {metrics['ratio']:.3f}")
        if args.pairs > 0:
            from lavid.metrics import transfer
            from lavid.metrics.latent_evals import scene_pairs

            states_a, targets_a, states_b, _ = scene_pairs(loaded.model, loaded.config.data, args.pairs,
                                                           seed=loaded.config.seed)
            result = transfer.cycle_transfer(loaded.model, states_a, targets_a, states_b, horizon)
            summary["cycle"] = transfer.summarize(result)
            c = summary["cycle"]
            print(f"cycle transfer over {c['transfer/pairs']} held-out pairs: error own {c['transfer/error_own']:.4f}, "
                  f"after A->B->A {c['transfer/error_cycle']:.4f}, ratio {c['transfer/ratio']:.3f}")
    except (RunError, DecoderError, VideoError, ValueError) as error:
        return fail(error)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
