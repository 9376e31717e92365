"""Request parts shared by the simulator's tests (SDK clients: ``oai``, ``claude`` in
:mod:`tests.support.fixtures`)."""

from __future__ import annotations

KEY = "test-key"
USER = [{"role": "user", "content": "Tell me about couriers."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}
