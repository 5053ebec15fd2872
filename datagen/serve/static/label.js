// The labelling page: a, b or t stores a label at once (a same-origin JSON POST), then opens
// the next pair to label; p and n move without labelling. Keys typed into a field, or with a
// modifier held, are left alone.
(function () {
  var root = document.getElementById('labelling');
  if (!root) { return; }
  var status = document.getElementById('label-status');
  var busy = false;

  function send(choice) {
    if (busy) { return; }
    busy = true;
    status.textContent = 'saving…';
    fetch(root.dataset.post, {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({pair_id: root.dataset.pair, choice: choice}),
      credentials: 'same-origin'
    }).then(function (r) {
      return r.json().then(function (body) { return {ok: r.ok, body: body}; });
    }).then(function (res) {
      if (!res.ok) { throw new Error(res.body.error || 'not stored'); }
      status.textContent = 'stored: ' + res.body.label;
      root.dataset.given = choice;
      window.location.assign(res.body.next);
    }).catch(function (e) {
      busy = false;
      status.textContent = 'not stored: ' + e.message;
    });
  }

  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    var tag = (e.target && e.target.tagName) || '';
    if (tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT') { return; }
    var key = e.key.toLowerCase();
    if (key === 'a' || key === 'b') { send(key); }
    else if (key === 't') { send('tie'); }
    else if (key === 'n' && root.dataset.next) { window.location.assign(root.dataset.next); }
    else if (key === 'p' && root.dataset.prev) { window.location.assign(root.dataset.prev); }
    else { return; }
    e.preventDefault();
  });
  Array.prototype.forEach.call(root.querySelectorAll('button[data-choice]'), function (b) {
    b.addEventListener('click', function () { send(b.dataset.choice); });
  });
})();
