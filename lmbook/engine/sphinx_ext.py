"""A Sphinx extension for the book build (listed in _config.yml).

sphinx-thebe and sphinx-togglebutton register their inline configuration scripts twice under Jupyter
Book 1 (once with filename None, once with ''), so every page threw "Identifier 'THEBE_JS_URL' has
already been declared". This drops repeated identical <script> entries from each page.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    if "script_files" not in context:
        return
    seen, unique = set(), []
    for js in context["script_files"]:
        attributes = tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items()))
        key = (str(getattr(js, "filename", js) or ""), attributes)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"][:] = unique


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
