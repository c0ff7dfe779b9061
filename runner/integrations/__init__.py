"""Adapters to agent frameworks. Each one is an optional extra: importing `runner` never imports them."""
