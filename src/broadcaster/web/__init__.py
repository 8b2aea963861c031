"""The citizens' web pages: sign up and leave in a browser, in Danish and English (routes.py),
server-rendered from templates/ with one stylesheet and one small script in static/."""
