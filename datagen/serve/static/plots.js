// Draw the leaderboard's plots from the figure specs in #figures (the report's figures).
// Records on <body> how many plots Plotly finished (data-plots), how many were expected
// (data-expected) and any error (data-errors), so a headless browser can tell they rendered.
(function () {
  var body = document.body;
  var errors = [];
  function fail(e) { errors.push(String(e)); body.dataset.errors = errors.join(' | '); }
  window.addEventListener('error', function (e) { fail(e.message); });
  var figs = JSON.parse(document.getElementById('figures').textContent);
  var ids = Object.keys(figs).filter(function (id) { return document.getElementById(id); });
  body.dataset.expected = ids.length;
  body.dataset.plots = 0;
  if (typeof Plotly === 'undefined') { fail('plotly.js did not load'); return; }
  var done = 0;
  Promise.all(ids.map(function (id) {
    var f = figs[id];
    return Plotly.newPlot(id, f.data, f.layout, {displaylogo: false, responsive: true})
      .then(function () { done += 1; body.dataset.plots = done; });
  })).then(function () { body.dataset.ready = '1'; }).catch(fail);
})();
