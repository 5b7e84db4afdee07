"""The server shell: HTTP and WebSocket layers around the core and the store."""
