"""Cost per job, budgets that concurrency cannot overshoot (docs/contract.md, Cost, budgets
and cache).

    prices.py   the shipped price table, COURIER_PRICES over it, a call's cost in nano-dollars
    bound.py    the most tokens a call can use, known before it is made
    ledger.py   budgets, spend per tenant and period, reservations of calls in flight (Redis)
    scripts.py  the ledger's Lua: reserve at the worst case, settle to the true cost

The worker reserves before each call and settles after it (``workers/run/spending.py``); the
API refuses what cannot fit and reports usage (``producers/api/routes/usage.py``).
"""
