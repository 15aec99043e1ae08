"""The mitmproxy side beside addon/gateway.py: the addon's options (options.py), what a
flow shows and its whole answer (flows.py), credentials hidden in recorded flows (flow_secrets.py), log
filters (log_filters.py), client connection limits (connections.py), and the loopback relay that
lets mitmproxy stream a response the engine produces (relay.py)."""
