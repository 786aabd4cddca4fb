"""The paper-trading FIX venue: QUOTE and TRADE sessions behind the engine's acceptor, fills by
the backtest kernel's rules, faults on demand (`emp venue CONFIG`)."""
