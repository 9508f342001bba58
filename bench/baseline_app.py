"""The baseline of the runtime benchmark: the ordinary way to serve a pickled model.

A bare Flask app under gunicorn, written the way a data scientist would without Gazelle:
``cloudpickle.load`` the model once per process, one ``POST /predict`` taking
``{"instances": [...]}`` with ``request.get_json()``, ``model.predict`` on the rows as they come,
numpy output turned into JSON with ``.tolist()`` and ``jsonify``. No validation, no metrics, no
access log beyond gunicorn's defaults: it is the bar the runtime must clear, not a product.

    BENCH_MODEL=model.pkl gunicorn --workers 2 --bind 127.0.0.1:8080 --chdir bench baseline_app:app
"""
from __future__ import annotations

import os

import cloudpickle
from flask import Flask, jsonify, request

with open(os.environ["BENCH_MODEL"], "rb") as f:
    model = cloudpickle.load(f)

app = Flask(__name__)


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/predict")
def predict():
    data = request.get_json()
    predictions = model.predict(data["instances"])
    return jsonify({"predictions": predictions.tolist()})
