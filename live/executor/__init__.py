"""The live executor: trades the promoted champion over FIX, bar by bar, as the backtest did."""
