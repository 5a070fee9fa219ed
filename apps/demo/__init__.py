"""The living demo of `make run`: its users and colleagues on duty, its world (workflows, tools,
agents, books), the sandbox's data, the hosted demo agents and the traffic that keeps them busy.

It sits on top of the product: it imports the product apps and no product app imports it, so a
deployment without the demo loses nothing but the demo. The one switch a product page shows, the
demo traffic's pause (apps/runtime/traffic_switch.py), is a row the product owns."""
