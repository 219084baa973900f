"""Regenerates the embedded demo (conveyor clip, its ground truth and the small defect detector) from seeds."""
import argparse
import json
import os
import sys
import time

import cv2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo import render  # noqa: E402
from demo.evaluate import NAMES, Tally, decode, to_input  # noqa: E402

CLIP_REL = "device_configs/demo/conveyor.mp4"
TRUTH_REL = "device_configs/demo/conveyor.truth.jsonl"
MODEL_REL = "models/demo/conveyor_det.onnx"
LABELS_REL = "models/demo/labels.txt"
CARD_REL = "models/demo/MODEL_CARD.md"

# Training recipe; fixed numbers (not a time budget) so a rerun gives the same model.
N_TRAIN, N_VAL = 6400, 600
EPOCHS, BATCH, LR = 5, 16, 4e-3   # 2000 steps: about 7 min on two idle cores


def write_clip(root, seed):
    """Render the clip, write mp4 + truth, and return the in-memory truth (with ignore/full flags)."""
    path, truth_path = os.path.join(root, CLIP_REL), os.path.join(root, TRUTH_REL)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frames, stats = render.clip_frames(seed)
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), render.FPS, (render.W, render.H))
    if not vw.isOpened():
        raise SystemExit("cv2.VideoWriter could not open an mp4v writer")
    truth = []
    with open(truth_path, "w") as f:
        for i, frame, objs in frames:
            vw.write(frame)
            truth.append(objs)
            # The file lists what a viewer could count: parts at least 30% inside the frame.
            listed = [{"id": o["id"], "label": o["label"], "box": [round(v, 1) for v in o["box"]]}
                      for o in sorted(objs, key=lambda o: o["id"]) if o["visible"] >= render.MIN_VISIBLE]
            f.write(json.dumps({"frame_id": i, "objects": listed}) + "\n")
    vw.release()
    # frame_id must equal the order VideoCapture returns frames in; verify rather than assume.
    cap = cv2.VideoCapture(path)
    decoded = []
    while True:
        ok, fr = cap.read()
        if not ok:
            break
        decoded.append(fr)
    cap.release()
    if len(decoded) != len(truth):
        raise SystemExit(f"clip has {len(decoded)} decodable frames, truth has {len(truth)}")
    size = os.path.getsize(path)
    print(f"clip: {path} ({size / 1e6:.2f} MB, {len(decoded)} frames), truth: {truth_path}")
    print(f"clip plan: {stats}")
    if size > 4e6:
        raise SystemExit("clip is over 4 MB; lower the noise or quality")
    return decoded, truth, stats


def eval_clip(model_path, frames, truth):
    """Score the export on the decoded clip: judgeable and strict P/R, plus per-defect-part hit rates."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    judge, strict = Tally(), Tally()
    per_part = {}
    for frame, objs in zip(frames, truth):
        x, meta = to_input(frame)
        dets = decode(sess.run(["output0"], {"images": x})[0], meta, frame.shape[1], frame.shape[0])
        matched = judge.add(dets, objs)
        strict.add(dets, [dict(o, ignore=False) for o in objs if o["visible"] >= render.MIN_VISIBLE])
        for o, m in zip(objs, matched):
            if o["full"]:
                rec = per_part.setdefault(o["id"], {"label": o["label"], "full": 0, "hit": 0})
                rec["full"] += 1
                rec["hit"] += int(m == NAMES.index(o["label"]))
    return judge.summary(), strict.summary(), per_part


def fmt_pr(summary):
    return ", ".join(f"{k}: P={v['precision']:.3f} R={v['recall']:.3f} (tp {v['tp']}, fp {v['fp']}, fn {v['fn']})"
                     for k, v in summary.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-root", default=".", help="repository root to write into")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-train", action="store_true", help="only re-render the clip and its truth")
    args = ap.parse_args()
    root = args.out_root
    t_start = time.time()

    frames, truth, clip_stats = write_clip(root, args.seed)
    if args.skip_train:
        return

    import torch  # only this tool needs torch; the runtime never imports it
    from demo import train as T
    from demo.evaluate import run_onnx
    T.seed_all(args.seed)

    t0 = time.time()
    tr_imgs, tr_targets, _ = T.build_set(args.seed + 1000, N_TRAIN, compress=True)
    _, _, val = T.build_set(args.seed + 2000, N_VAL, compress=False)
    n_obj = sum(len(t) for t in tr_targets)
    render_s = time.time() - t0
    print(f"rendered {N_TRAIN} training frames ({n_obj} objects) and {N_VAL} held-out frames "
          f"in {render_s:.0f}s")

    model = T.DemoDet()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters; training {EPOCHS} epochs x {N_TRAIN // BATCH} steps")
    model, train_s = T.train(model, tr_imgs, tr_targets, EPOCHS, BATCH, LR, args.seed)
    print(f"training wall time {train_s:.0f}s")

    model_path = os.path.join(root, MODEL_REL)
    os.makedirs(os.path.dirname(model_path), exist_ok=True)
    meta = {"names": "{0: 'part', 1: 'defect'}", "imgsz": f"[{T.IMGSZ}, {T.IMGSZ}]",
            "stride": str(max(T.STRIDES)), "task": "detect",
            "description": "edgert demo: good vs defective parts on a synthetic conveyor (not for real use)",
            "author": "edgert tools/make_demo.py"}
    diff = T.export_onnx(model, model_path, meta)
    with open(os.path.join(root, LABELS_REL), "w") as f:
        f.write("\n".join(NAMES) + "\n")
    print(f"exported {model_path} ({os.path.getsize(model_path) / 1e3:.0f} kB, "
          f"max |torch - onnxruntime| = {diff:.2e})")

    # Everything below runs the ONNX file through onnxruntime, i.e. what the device will run.
    held = run_onnx(model_path, val)
    print(f"held-out ({N_VAL} frames): {fmt_pr(held)}")
    judge, strict, per_part = eval_clip(model_path, frames, truth)
    print(f"clip, judgeable objects: {fmt_pr(judge)}")
    print(f"clip, every truth-file object: {fmt_pr(strict)}")
    for k, r in sorted(per_part.items()):
        print(f"  part {k:2d} {r['label']:6s}: right label on {r['hit']}/{r['full']} fully visible frames")
    ok = (all(v["precision"] >= 0.95 and v["recall"] >= 0.95 for v in held.values())
          and all(r["hit"] > r["full"] / 2 for r in per_part.values() if r["label"] == "defect"))
    print("targets met" if ok else "TARGETS NOT MET")

    from demo.card import write_card
    write_card(os.path.join(root, CARD_REL), dict(
        torch=torch.__version__, seed=args.seed, n_params=n_params, n_train=N_TRAIN, n_val=N_VAL,
        n_train_objects=n_obj, epochs=EPOCHS, batch=BATCH, lr=LR, train_s=train_s,
        held=held, judge=judge, strict=strict, per_part=per_part, clip_stats=clip_stats,
        model_kb=os.path.getsize(model_path) / 1e3, model_path=model_path, total_s=time.time() - t_start))
    print(f"done in {time.time() - t_start:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
