"""Writes models/demo/MODEL_CARD.md from the figures make_demo.py just measured, so the card never goes stale."""

TEMPLATE = """# Model card: `conveyor_det.onnx` (edgert demo detector)

**Demo only.** This model exists so the embedded demo (`device_configs/demo/conveyor.mp4`) has
something meaningful to detect. It was trained and tested on synthetic images only and must not be
used to inspect real parts.

## What it does

Finds machined parts (brackets, plates, washers, L-brackets) on a conveyor belt and labels each
whole part as `part` (good) or `defect` (cracked, scratched, chipped, rusty or burnt).

## How it was made

Everything is produced by `python tools/make_demo.py` (seed {seed}; `--seed N` changes it).

- **Data**: rendered by `tools/demo/render.py`, the same renderer that draws the demo clip:
  textured moving belt with seams, shaded metal parts with shadows, lamp fall-off, brightness
  drift and flicker, sensor noise, motion blur and defocus. Training used {n_train} frames
  ({n_train_objects} labelled objects; wider ranges of belt shade, lighting, part count and blur
  than the clip; 85% JPEG-recompressed to mimic the video codec; random horizontal flips).
  A separate seed gave {n_val} held-out frames. About 45% of training parts are defective.
- **Architecture**: anchor-free, YOLOv8-style: Conv+BN+SiLU backbone with C2f blocks, a
  top-down (FPN) neck feeding stride-16 context into stride 8, decoupled box/class heads at
  strides 8 and 16 (1600 + 400 = 2000 anchors; boxes as softplus distances to the anchor
  centre), **{n_params:,} parameters** ({model_kb:.0f} kB ONNX, BatchNorm folded into the convs).
- **Training**: task-aligned assignment (top-10 anchors inside each box by score^0.5 x IoU^6),
  BCE class loss on IoU-aware targets, GIoU box loss (weight 5); AdamW lr {lr} with warm-up and
  cosine decay, batch {batch}, {epochs} epochs, EMA weights; CPU, 2 threads, deterministic
  algorithms. Training took {train_m:.1f} min wall clock (whole tool: {total_m:.1f} min).
  Torch {torch}.

## I/O contract

- Input `images`: float32 `[1, 3, 320, 320]`, **RGB**, values / 255 (0..1), no mean/std.
  The frame is letterboxed Ultralytics-style: `scale = min(320/h, 320/w)`, resize with
  `cv2.INTER_LINEAR` to `round(w*scale) x round(h*scale)`, centred
  (`left = (320-new_w)//2`, `top = (320-new_h)//2`), padding value 114. For the 640x360 demo
  clip: scale 0.5, 320x180 image at top = 70.
- Output `output0`: float32 `[1, 6, 2000]`; rows 0-3 = cx, cy, w, h in input (320x320) pixels,
  rows 4-5 = class scores already passed through a sigmoid (`part`, `defect`).
  No objectness row, no NMS in the graph (same layout as an Ultralytics YOLOv8 export).
- Metadata: `names` = `{{0: 'part', 1: 'defect'}}`, `imgsz` = `[320, 320]`, `stride` = `16`,
  `task` = `detect`. Labels also in `labels.txt`.
- Intended post-processing: confidence >= 0.25, class-aware NMS at IoU 0.45, boxes mapped back
  through the letterbox.

## Measured quality (onnxruntime on the exported file)

Matching: IoU >= 0.5 with the right label. Objects that the pixels cannot settle are neither
counted nor penalised: parts less than 30% inside the frame, and defective parts whose defect
is outside the frame.

Held-out synthetic frames ({n_val}):

| class | precision | recall | TP | FP | FN |
|---|---|---|---|---|---|
{held_rows}

Demo clip (300 decoded frames, judgeable objects):

| class | precision | recall | TP | FP | FN |
|---|---|---|---|---|---|
{judge_rows}

Same clip against every object in `conveyor.truth.jsonl` (edge-cut defective parts count as
`defect` even when their defect is off-frame): {strict_line}

Parts fully inside the frame, share of those frames where the part got the right label:
{per_part_lines}

## Reproducibility

Everything is seeded (renderer, data order, torch) and training uses
`torch.use_deterministic_algorithms(True)` on 2 CPU threads, so rerunning the command with the
same seed and software versions gives a byte-identical model; the model file's sha256 is
`{sha256}`.
`--skip-train` re-renders only the clip and its truth (also byte-identical).

## Limits

- Synthetic data only, one renderer; never validated on camera footage. Not for real factories.
- Knows only the part shapes and defect kinds above, one scale (parts ~60-125 px in a 640x360
  frame), a top-down view and a dark belt.
- Edge-cut parts are labelled from what is visible; a defect that is off-frame cannot be seen.
"""


def _rows(summary):
    return "\n".join(f"| {k} | {v['precision']:.3f} | {v['recall']:.3f} | {v['tp']} | {v['fp']} | {v['fn']} |"
                     for k, v in summary.items())


def write_card(path, d):
    """d: the figures make_demo.py measured; `model_path` is hashed so the card names its file."""
    import hashlib
    with open(d.pop("model_path"), "rb") as f:
        d["sha256"] = hashlib.sha256(f.read()).hexdigest()
    strict = "; ".join(f"{k} P={v['precision']:.3f} R={v['recall']:.3f}" for k, v in d["strict"].items())
    parts = []
    for label in ("defect", "part"):
        items = [f"#{k} {r['hit']}/{r['full']}" for k, r in sorted(d["per_part"].items()) if r["label"] == label]
        parts.append(f"- `{label}` ({len(items)} parts): " + ", ".join(items))
    text = TEMPLATE.format(
        held_rows=_rows(d["held"]), judge_rows=_rows(d["judge"]), strict_line=strict,
        per_part_lines="\n".join(parts), train_m=d["train_s"] / 60, total_m=d["total_s"] / 60, **d)
    with open(path, "w") as f:
        f.write(text)
