"""DyHead Explorer's Streamlit dashboard: thin views over `dyhead` and `analysis`.

Run with ``./run.sh app`` (``streamlit run app/main.py``). The entry file `app/main.py` is the router;
each page is a script in `app/views/`; `app/sidebar.py` draws the model, data and image choices shared
by every page; `app/compute.py` calls into `dyhead` / `analysis` and holds the caches.
"""
