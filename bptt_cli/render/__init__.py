"""Everything bptt shows a person or a program: rich on a terminal, plain lines otherwise, JSON on request.

The library hands over plain dicts and lists; only this package knows how they look.
"""
