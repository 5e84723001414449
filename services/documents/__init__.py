"""Invoices and credit notes as documents a customer can be sent: what they say
(`model`: parties, dates, terms, lines in plain words, tax with its rate, totals), rendered as
HTML (`html`) or PDF (`pdf`). Importing this package imports no renderer."""
