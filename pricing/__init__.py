"""Meterline's pure pricing domain: money, plans, events, periods, aggregations, charge models
and rating. No I/O: everything here is a function of its arguments."""
