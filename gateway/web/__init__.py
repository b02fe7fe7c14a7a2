"""The browser side served by the gateway: the JS client at `/client/live.js` and the live page at `/`."""
