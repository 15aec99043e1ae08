"""The mitmproxy side beside addon/gateway.py: the loopback relay that lets mitmproxy stream a
response the engine produces."""
