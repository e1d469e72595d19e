"""The console's one stylesheet (inline: the pages fetch nothing). Text keeps a contrast
of 4.5:1 or more, focus is always visible, and below 640 px wide the navigation wraps,
forms stack and tables scroll sideways inside their box."""

STYLE = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1a1a1a;
background:#fff}
a{color:#0b5cad}
:focus-visible{outline:3px solid #0b5cad;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#fff;padding:4px}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.4em 1em;padding:.6em 1em;
background:#1f3a5f;color:#fff}
header a{color:#fff}.brand{font-weight:700;text-decoration:none;margin-right:.5em}
nav ul{display:flex;flex-wrap:wrap;gap:.2em .9em;list-style:none;margin:0;padding:0}
nav a{text-decoration:none;padding:.15em .1em}
nav a[aria-current=page]{border-bottom:3px solid #fff;font-weight:600}
header :focus-visible{outline-color:#fff}
.logout{margin-left:auto}
main{padding:.5em 1em 2em;max-width:1500px}
h1{font-size:1.5em;margin:.5em 0}h2{font-size:1.2em;margin:1.4em 0 .4em}
.muted{color:#595959}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.4em 0 1em;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #d0d4da;padding:.3em .7em;text-align:left;vertical-align:top}
thead th,table>tbody>tr:first-child>th[scope=col]{background:#f3f4f6}
td.n,th.n{text-align:right}td.n{white-space:nowrap}
.active{color:#17692f}.hibernating{color:#8a5300}.inactive,.unavailable,.failed{color:#b00020}
.note{padding:.5em .8em;border-radius:4px}.note.ok{background:#e8f5ec;color:#17692f}
.note.problem{background:#fdecee;color:#b00020}
button,input,select,textarea{font:inherit}
button{padding:.3em .9em;border:1px solid #1f3a5f;border-radius:4px;background:#fff;
color:#1f3a5f;cursor:pointer}
button.danger{border-color:#b00020;color:#b00020}
header button{background:transparent;color:#fff;border-color:#fff}
input,select,textarea{padding:.25em .4em;border:1px solid #767676;border-radius:3px;
max-width:100%}
form.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(13em,1fr));gap:.6em 1em;
align-items:end;margin:.5em 0 1em}
form.grid label{display:flex;flex-direction:column;gap:.15em}
form.inline{display:inline-flex;flex-wrap:wrap;gap:.3em;align-items:center;margin:0}
textarea{width:100%;min-height:14em;font-family:ui-monospace,monospace}
.secret{font-family:ui-monospace,monospace;width:32em}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,440px),1fr));
gap:0 2em}
figure.chart{margin:.8em 0 1.2em;max-width:760px;min-width:0}
figcaption{font-weight:600;margin-bottom:.3em}
.plot{overflow-x:auto}
.plot svg{display:block;width:100%;height:auto}
svg text{font-size:15px;fill:#333}
svg .grid{stroke:#d9dce1;stroke-width:1}
svg .hit{fill:transparent}
svg .col:focus{outline:none}svg .col:focus .hit,svg .col:hover .hit{fill:#0b5cad22;
stroke:#0b5cad;stroke-width:2}
ul.legend{display:flex;flex-wrap:wrap;gap:.2em 1.2em;list-style:none;padding:0;margin:.3em 0}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.35em;vertical-align:-.1em;
border-radius:2px}
details summary{cursor:pointer;color:#0b5cad}
ol.timeline{list-style:none;padding:0;margin:.5em 0 1em}
ol.timeline li{display:grid;grid-template-columns:9em 1fr 6em;gap:.6em;align-items:center;
padding:.2em 0}
.track{display:block;background:#f3f4f6;height:1.1em;border-radius:2px}
.track .leg{display:block;height:100%;border-radius:2px;min-width:2px}
ul.plain{list-style:none;padding-left:0}pre{white-space:pre-wrap;overflow-wrap:anywhere;
background:#f3f4f6;padding:.6em}
@media (max-width:640px){
 table.cards thead{position:absolute;left:-9999px}
 table.cards,table.cards tbody,table.cards tr,table.cards td{display:block}
 table.cards tr{border-bottom:2px solid #d0d4da;padding:.3em 0}
 table.cards td{border:0;padding:.1em 0;display:flex;gap:.8em;text-align:left}
 table.cards td::before{content:attr(data-label);flex:0 0 40%;color:#595959}
 table.cards td:empty{display:none}
 body{font-size:14px}main{padding:.4em .6em 2em}
 .logout{margin-left:0}
 ol.timeline li{grid-template-columns:7em 1fr 5em}
 .secret{width:100%}
}
"""
