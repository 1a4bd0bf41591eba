"""The console's page frame: navigation, styles, the little plain JS (drop a photo, upload progress, clicks),
and the readable error box. Every page is server-rendered HTML; nothing here needs a build step."""

from __future__ import annotations

from html import escape

from services.search.page import CSS as SEARCH_CSS

NAV = (("/", "Search"), ("/catalogue", "Catalogue"), ("/models", "Models"), ("/health", "Health"))

CSS = SEARCH_CSS + """
nav{background:#1f2a44;padding:0 32px;display:flex;gap:4px;align-items:center}
nav a{color:#dfe6f5;text-decoration:none;padding:14px 12px;font-size:15px}
nav a[aria-current=page]{color:#fff;border-bottom:3px solid #8fb3ff}
nav .brand{color:#fff;font-weight:700;margin-right:18px}
section.panel{background:#fff;border-bottom:1px solid #e3e3e0;padding:18px 32px}
form.inline{display:inline}
label{font-size:13px;color:#333;display:block;margin:6px 0 2px}
input,select,button{font:inherit;font-size:14px}
input[type=text],input[type=number],input[type=password],input[type=search]{padding:5px 7px;border:1px solid #bbb;
border-radius:4px}
button{background:#2d5bd7;color:#fff;border:0;border-radius:4px;padding:6px 12px;cursor:pointer}
button.secondary{background:#e8ebf2;color:#1f2a44}
.row{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-end}
.drop{border:2px dashed #9aa7c7;border-radius:8px;padding:22px;text-align:center;color:#444;min-width:260px}
.drop.over{background:#eef3ff}
.error{background:#fdecea;color:#8a1c13;border:1px solid #f5c2bd;border-radius:6px;padding:10px 14px;margin:14px 32px}
.note{background:#eef7ee;color:#1e5b23;border:1px solid #c5e4c8;border-radius:6px;padding:10px 14px;margin:14px 32px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:14px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f1f2f5}
.badge{display:inline-block;border-radius:8px;padding:1px 8px;font-size:12px;background:#e8ebf2}
.badge.serving{background:#d6f5d9;color:#1e5b23}.badge.bad{background:#fdecea;color:#8a1c13}
.product{display:flex;gap:16px;background:#fff;border-radius:8px;padding:12px;margin-bottom:12px;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
.product .info{flex:0 0 300px}
.product .imgs{display:flex;gap:8px;flex-wrap:wrap;flex:1}.product figure{margin:0;font-size:12px;max-width:170px}
.product img{width:160px;height:160px;object-fit:contain;background:#fafafa;border-radius:4px}
.card .actions{margin-top:8px;display:flex;gap:6px;align-items:center}
.card .actions a{font-size:13px}
h2{font-size:17px;margin:18px 0 8px}
"""

JS = """
(function(){
  var form=document.getElementById('search-form'), input=document.getElementById('photo'),
      drop=document.getElementById('drop'), bar=document.getElementById('progress');
  if(drop&&input){
    ['dragenter','dragover'].forEach(function(t){drop.addEventListener(t,function(e){e.preventDefault();
      drop.classList.add('over');});});
    ['dragleave','drop'].forEach(function(t){drop.addEventListener(t,function(e){e.preventDefault();
      drop.classList.remove('over');});});
    drop.addEventListener('drop',function(e){if(e.dataTransfer.files.length){input.files=e.dataTransfer.files;
      drop.textContent=e.dataTransfer.files[0].name;}});
  }
  if(form&&window.FormData&&window.XMLHttpRequest){
    form.addEventListener('submit',function(e){
      e.preventDefault();
      var xhr=new XMLHttpRequest(); xhr.open('POST',form.action);
      if(bar){bar.hidden=false;bar.value=0;}
      xhr.upload.onprogress=function(p){if(bar&&p.lengthComputable){bar.value=p.loaded/p.total;}};
      xhr.onload=function(){document.open();document.write(xhr.responseText);document.close();};
      xhr.onerror=function(){if(bar){bar.hidden=true;} alert('The console could not be reached.');};
      xhr.send(new FormData(form));
    });
  }
  document.querySelectorAll('form.click').forEach(function(f){
    f.addEventListener('submit',function(e){
      e.preventDefault();
      fetch(f.action+"?js=1",{method:'POST',body:new URLSearchParams(new FormData(f)),credentials:'same-origin'})
        .then(function(r){return r.text().then(function(t){return [r.ok,t];});})
        .then(function(res){var s=f.querySelector('.status');s.textContent=res[0]?'click recorded':res[1];
          f.closest('.card').classList.add(res[0]?'clicked':'failed');});
    });
  });
  var refresh=document.querySelector('[data-refresh]');
  if(refresh){setTimeout(function(){location.reload();},Number(refresh.dataset.refresh)*1000);}
})();
"""


def page(title: str, body: str, *, active: str = "/", error: str | None = None, note: str | None = None,
         refresh_s: int | None = None) -> str:
    """A whole page: the navigation with `active` marked, the error or note (if any), then `body`."""
    links = "".join(f'<a href="{href}"' + (' aria-current="page"' if href == active else "") + f">{name}</a>"
                    for href, name in NAV)
    flash = (f'<div class="error" role="alert">{escape(error)}</div>' if error else "") + (
        f'<div class="note" role="status">{escape(note)}</div>' if note else "")
    refresh = f'<span data-refresh="{refresh_s}" hidden></span>' if refresh_s else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)} - FashionNet console</title><style>{CSS}</style></head><body>"
            f'<nav aria-label="Console"><span class="brand">FashionNet</span>{links}</nav>{flash}{body}{refresh}'
            f'<script src="/console.js"></script></body></html>\n')


def hidden(name: str, value: object) -> str:
    return f'<input type="hidden" name="{escape(name)}" value="{escape(str(value))}">'


def metrics_text(metrics: dict[str, float] | object) -> str:
    items = sorted(dict(metrics).items())  # a protobuf map or a dict
    return ", ".join(f"{k} {v:.3f}" for k, v in items) or "-"
