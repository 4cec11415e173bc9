"""Check the intervention verdicts on real trained models (not a test: it trains; ~minutes).

Trains ``gapnet`` on ``shapes`` (clean), ``shapes-spurious`` and ``shapes-patch`` (3 epochs,
seed 0), then on a test sample runs the background swap (with masks) and the mask-free region
procedure on Grad-CAM / LayerCAM maps at two layers, and prints what is flagged.

Run from the repository root: ``PYTHONPATH=. python tests/reference/validate_interventions.py``
(options ``--n 240 --device cpu --epochs 3 --layers features.relu3,features.relu4
--methods gradcam,layercam --cache DIR``; trained models are kept in ``--cache``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from reporter.data import load_dataset
from reporter.explain import CamEngine
from reporter.metrics.trust.interventions import background_swap, region_shortcuts
from reporter.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--layers", default="features.relu3,features.relu4")
    ap.add_argument("--cache", default="/tmp/reporter-validate-interventions")
    ap.add_argument("--methods", default="gradcam,layercam")
    args = ap.parse_args()
    layers = args.layers.split(",")
    methods = args.methods.split(",")
    report: dict = {}
    for data, shortcut in (
        ("shapes", "absent"),
        ("shapes-spurious", "absent"),
        ("shapes-patch", "kept"),
    ):
        t0 = time.time()
        bundle = load_dataset(data, shortcut=shortcut)
        cached = Path(args.cache) / f"{data}-e{args.epochs}.pt"
        if cached.exists():
            # our own file, written below: a pickled module is fine for this dev script
            model, pre = torch.load(cached, weights_only=False)
            bundle.set_transform(pre)
        else:
            result = train(bundle, TrainConfig(epochs=args.epochs, device="cpu"), progress=False)
            model, pre = result.loaded.model, bundle.test.transform
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save((model, pre), cached)
        model = model.to(args.device).eval()
        test = bundle.test
        n = min(args.n, len(test))
        images = torch.stack([test[i][0] for i in range(n)]).to(args.device)
        labels = torch.as_tensor([test[i][1] for i in range(n)], device=args.device)
        masks = test.masks[:n].to(args.device)
        with torch.no_grad():
            acc = float((model(images).argmax(1) == labels).float().mean())
        names = bundle.class_names
        entry: dict = {"accuracy": acc, "train_s": round(time.time() - t0, 1)}
        swap = background_swap(model, images, masks, labels, class_names=names)
        entry["background_swap"] = {
            k: {"flagged": e.flagged, "drop": round(e.drop, 3), "changed": round(e.changed, 3)}
            for k, e in swap.items()
        }
        with CamEngine(model, layers=layers, methods=methods) as engine:
            res = engine(images, labels)
            for layer in res.maps[methods[0]]:
                for method in methods:
                    maps = res.upsampled(method, layer, tuple(images.shape[-2:]), normalize=False)
                    cues = region_shortcuts(model, images, labels, maps, names)
                    entry[f"region {method}@{layer}"] = {
                        k: {
                            "flagged": c.flagged,
                            "box": list(c.region.box),
                            "position": c.region.position,
                            "flip": round(c.paste.flip_rate, 3) if c.paste else None,
                            "control": c.paste.control_flip_rate if c.paste else None,
                            "agreement": round(c.region.location_agreement or 0, 3),
                            "ablation_drop": round(c.ablation.drop, 3) if c.ablation else None,
                        }
                        for k, c in cues.items()
                    }
        report[data] = entry
        print(data, json.dumps(entry, indent=1), flush=True)


if __name__ == "__main__":
    main()
