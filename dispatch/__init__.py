"""The edge: FastAPI app (scheduling API, job webhooks, auth), the Cloud Tasks client and the
local Cloud Tasks emulator. May import flows, tasks and models."""
