"""A faithful copy of the lab's serving pattern, the baseline of bench/bench_api.py:
one uvicorn process, a plain ``def`` endpoint (run in Starlette's thread pool), PIL
decode, the lab's torchvision transforms, ``torch.no_grad()``, torch's default thread
count, and prometheus-fastapi-instrumentator as in the lab. Not for production.

The model is a whole pickled module as the lab loads it: ``LAB_MODEL=/path/food11.pth``.
"""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import FastAPI
from PIL import Image
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel, Field
from torchvision import transforms

app = FastAPI(title="Food Classification API (lab pattern)")


class ImageRequest(BaseModel):
    image: str


class PredictionResponse(BaseModel):
    prediction: str
    probability: float = Field(..., ge=0, le=1)


device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = torch.load(os.environ["LAB_MODEL"], map_location=device, weights_only=False)
model.to(device)
model.eval()

classes = np.array([
    "Bread", "Dairy product", "Dessert", "Egg", "Fried food", "Meat", "Noodles/Pasta",
    "Rice", "Seafood", "Soup", "Vegetable/Fruit",
])


def preprocess_image(img):
    transform = transforms.Compose([
        transforms.Resize((224, 224)),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    return transform(img).unsqueeze(0)


@app.post("/predict")
def predict_image(request: ImageRequest):
    try:
        image_data = base64.b64decode(request.image)
        image = Image.open(io.BytesIO(image_data)).convert("RGB")
        image = preprocess_image(image).to(device)
        with torch.no_grad():
            output = model(image)
            probabilities = F.softmax(output, dim=1)
            predicted_class = torch.argmax(probabilities, 1).item()
            confidence = probabilities[0, predicted_class].item()
        return PredictionResponse(prediction=classes[predicted_class], probability=confidence)
    except Exception as e:  # noqa: BLE001 - as the lab does
        return {"error": str(e)}


@app.get("/readyz")
def readyz():
    return {"ready": True}


Instrumentator().instrument(app).expose(app)
