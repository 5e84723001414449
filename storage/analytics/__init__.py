"""Reads for the revenue analytics (`services.analytics`): invoices (`invoiced`) and rollups
(`usage`), in bulk, one statement per report. Never the raw ledger: 12 months of 10,000
customers are a few hundred thousand invoice rows, where the ledger holds billions of events.
"""
