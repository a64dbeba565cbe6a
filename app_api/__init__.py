"""The Food-11 model API: FastAPI served by gunicorn with uvicorn workers."""
