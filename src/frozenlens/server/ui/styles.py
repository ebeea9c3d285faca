"""Styles and the one bit of browser code of the search page.

Each stylesheet is a ``css_template`` of one ``gr.HTML`` component, which
Gradio scopes to that component. Colours come from the Gradio theme's CSS
variables, so light and dark mode both work.
"""

from __future__ import annotations

#: clicking (or Enter/Space on) a result card selects it and fires the HTML
#: component's ``select`` event with the image id; a double click opens the
#: full-size photo. Delegated listeners survive re-rendering of the grid.
SELECT_JS = """
const pick = (card) => {
  element.querySelectorAll('.fl-card.fl-selected').forEach((c) => {
    c.classList.remove('fl-selected'); c.setAttribute('aria-pressed', 'false');
  });
  card.classList.add('fl-selected'); card.setAttribute('aria-pressed', 'true');
  trigger('select', {id: Number(card.dataset.id)});
};
element.addEventListener('click', (e) => {
  const card = e.target.closest('.fl-card');
  if (card) pick(card);
});
element.addEventListener('dblclick', (e) => {
  const card = e.target.closest('.fl-card');
  if (card) window.open('api/v1/images/' + Number(card.dataset.id) + '/file', '_blank', 'noopener');
});
element.addEventListener('keydown', (e) => {
  if (e.key !== 'Enter' && e.key !== ' ') return;
  const card = e.target.closest('.fl-card');
  if (card) { e.preventDefault(); pick(card); }
});
"""

STATUS_CSS = """
.fl-status { padding: 10px 14px; border-radius: 8px; border: 1px solid var(--border-color-primary);
  background: var(--background-fill-secondary); }
.fl-status.fl-empty { border-style: dashed; }
.fl-status.fl-error { border-color: #d9534f; background: rgba(217, 83, 79, 0.10); }
.fl-status.fl-error .fl-text::before { content: "⚠ "; }
.fl-text { font-weight: 600; }
.fl-detail { margin-top: 4px; font-size: 0.92em; color: var(--body-text-color-subdued); }
"""

CARDS_CSS = """
.fl-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
.fl-card { display: flex; flex-direction: column; border: 1px solid var(--border-color-primary); border-radius: 8px;
  overflow: hidden; cursor: pointer; background: var(--background-fill-primary); transition: box-shadow .1s; }
.fl-card:hover { box-shadow: 0 2px 8px rgba(0, 0, 0, 0.18); }
.fl-card:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 1px; }
.fl-card.fl-selected { outline: 3px solid var(--color-accent); outline-offset: -1px; }
.fl-thumb { display: block; width: 100%; aspect-ratio: 4 / 3; object-fit: cover; background: var(--background-fill-secondary); }
.fl-missing { display: flex; align-items: center; justify-content: center; font-size: 12px;
  color: var(--body-text-color-subdued); }
.fl-meta { padding: 6px 8px 8px; font-size: 12px; line-height: 1.35; display: flex; flex-direction: column; gap: 2px; }
.fl-row { display: flex; justify-content: space-between; gap: 6px; }
.fl-score { font-weight: 700; color: var(--color-accent); font-variant-numeric: tabular-nums; }
.fl-group { margin-left: 6px; padding: 0 6px; border-radius: 8px; font-size: 0.85em;
  background: var(--color-accent-soft); color: var(--body-text-color); }
.fl-date { font-variant-numeric: tabular-nums; }
.fl-date-note { margin-left: 4px; font-size: 0.8em; color: var(--body-text-color-subdued); }
.fl-camera, .fl-path { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; color: var(--body-text-color-subdued); }
.fl-caption { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; min-height: 2.7em; }
.fl-path { font-family: var(--font-mono); font-size: 11px; }
"""

WHY_CSS = """
.fl-why { font-size: 13px; line-height: 1.4; }
.fl-why-empty { padding: 14px; border: 1px dashed var(--border-color-primary); border-radius: 8px;
  color: var(--body-text-color-subdued); }
.fl-why-head { display: flex; gap: 10px; align-items: flex-start; margin-bottom: 6px; }
.fl-why-thumb { width: 120px; border-radius: 6px; display: block; }
.fl-why-name { font-weight: 700; font-size: 14px; }
.fl-why-path { font-family: var(--font-mono); font-size: 11px; word-break: break-all; color: var(--body-text-color-subdued); }
.fl-full { display: inline-block; margin-top: 4px; }
h4 { margin: 10px 0 4px; font-size: 13px; }
table { border-collapse: collapse; width: 100%; border: none; margin: 0; }
tr, th, td { border: none; background: none; }
th { text-align: left; font-weight: 400; color: var(--body-text-color-subdued); padding: 1px 8px 1px 0; width: 55%; }
td { padding: 1px 0; }
.fl-num { font-variant-numeric: tabular-nums; text-align: right; }
ul { list-style: none; margin: 0; padding: 0; }
.fl-label { display: grid; grid-template-columns: 1fr 80px 48px; gap: 6px; align-items: center; }
.fl-bar { height: 8px; background: var(--background-fill-secondary); border-radius: 4px; overflow: hidden; }
.fl-bar span { display: block; height: 100%; background: var(--color-accent); }
.fl-captions li { margin-bottom: 4px; }
.fl-tag { font-size: 11px; color: var(--body-text-color-subdued); }
.fl-none { color: var(--body-text-color-subdued); }
.fl-facts { margin-top: 8px; }
"""

INDEX_CSS = """
.fl-tiles { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 10px; }
.fl-tile { min-width: 110px; padding: 8px 12px; border: 1px solid var(--border-color-primary); border-radius: 8px;
  background: var(--background-fill-secondary); }
.fl-big { font-size: 1.6em; font-weight: 700; font-variant-numeric: tabular-nums; }
.fl-small { color: var(--body-text-color-subdued); font-size: 12px; }
table { border-collapse: collapse; border: none; margin: 0; }
tr, th, td { border: none; background: none; }
th { text-align: left; font-weight: 400; color: var(--body-text-color-subdued); padding: 2px 16px 2px 0; }
td { padding: 2px 0; }
h4 { margin: 10px 0 4px; }
.fl-cams { margin: 0; padding-left: 18px; }
.fl-num { color: var(--body-text-color-subdued); }
.fl-job { display: flex; flex-direction: column; gap: 4px; }
.fl-job progress { width: 100%; }
.fl-job-failed { color: #d9534f; }
"""
