"""The loss-comparison study: SFT once, each loss from it, judged head to head, one report."""
