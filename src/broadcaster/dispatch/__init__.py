"""Dispatch: the fan-out of alerts to deliveries, the deliveries queue, the dispatcher loop with
its rate limits and circuit breakers, and the receipts that come back."""
