"""Train from a `kgraph compile --training` export with only numpy and onnxruntime.

usage: python ort_train.py EXPORT_DIR x.npy y.npy STEPS OUT.npz
Runs STEPS train steps over the data in order (batches of the manifest's batch size,
wrapping around), then saves the final state arrays to OUT.npz.
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort

folder, x_path, y_path, steps, out_path = sys.argv[1:6]
manifest = json.load(open(os.path.join(folder, "manifest.json")))
session = ort.InferenceSession(os.path.join(folder, manifest["files"]["train_step"]))
state = dict(np.load(os.path.join(folder, manifest["state_file"])))
x, y = np.load(x_path), np.load(y_path)
batch, lr, t = manifest["batch_size"], manifest["learning_rate"], manifest["t_start"]
wanted = [o.name for o in session.get_outputs()]
for step in range(int(steps)):
    rows = np.arange(step * batch, (step + 1) * batch) % len(x)
    feeds = {"lr": np.array(lr, np.float32), "t": np.array(t, np.float32)}
    for item in manifest["data_inputs"]:
        role = item["role"]
        feeds[item["name"]] = (x[rows] if role == "x" else y[rows] if role == "y"
                               else np.ones(len(rows), np.float32))
    feeds.update({name: state[name] for name in manifest["state_inputs"]})
    results = dict(zip(wanted, session.run(wanted, feeds)))
    for out_name, in_name in manifest["feedback"].items():
        state[in_name] = results[out_name]
    t += 1
print(f"loss after {steps} steps: {float(results['loss']):.6f}; kgraph imported: {'kgraph' in sys.modules}")
np.savez(out_path, **state)
