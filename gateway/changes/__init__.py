"""From a committed write to a change in the model's stream: change objects, the outbox, and the relay."""
