// The live page: one table per model, kept live by the JS client over one multiplexed connection, with
// forms that write through the REST API. Plain ES modules, no build step.
import { Connection } from '/client/live.js';

const { rest, models } = await (await fetch('/page/models.json')).json();
const stateView = document.getElementById('state');
const positionView = document.getElementById('position');
const connection = new Connection({
  rest,
  onState(state, { position }) {
    stateView.textContent = stateView.dataset.state = state;
    positionView.textContent = position;
  },
});
window.gatewayPage = { connection, collections: {} };

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function cell(value) {
  return value === undefined || value === null ? '' : typeof value === 'object' ? JSON.stringify(value) : String(value);
}

async function send(method, url, body) {
  const response = await fetch(url, { method, headers: { 'content-type': 'application/json' }, body: body && JSON.stringify(body) });
  if (!response.ok) throw new Error((await response.json()).error?.message || response.statusText);
}

function modelSection(model) {
  const editable = model.properties.filter((p) => !p.generated);
  const columns = model.properties.map((p) => p.name);
  const body = element('tbody');
  const error = element('span', { class: 'error' });
  const inputs = Object.fromEntries(editable.map((p) => [p.name, p.type === 'boolean'
    ? element('input', { type: 'checkbox', name: p.name })
    : element('input', { type: p.type === 'number' ? 'number' : 'text', name: p.name, placeholder: p.name })]));
  let editing = null;
  const submit = element('button', { type: 'submit' }, 'Create');
  const cancel = element('button', { type: 'button', hidden: '', onclick: () => edit(null) }, 'Cancel');

  function value(p) {
    const input = inputs[p.name];
    if (p.type === 'boolean') return input.checked;
    if (input.value === '') return undefined;
    if (p.type === 'number') return Number(input.value);
    if (['object', 'array', 'any'].includes(p.type)) return JSON.parse(input.value);
    return input.value;
  }

  function edit(row) {
    editing = row;
    for (const p of editable) {
      const input = inputs[p.name];
      if (p.type === 'boolean') input.checked = Boolean(row?.[p.name]);
      else input.value = row ? cell(row[p.name]) : '';
    }
    submit.textContent = row ? `Save #${row[model.id]}` : 'Create';
    cancel.hidden = !row;
  }

  const form = element('form', {
    async onsubmit(event) {
      event.preventDefault();
      error.textContent = '';
      const row = Object.fromEntries(editable.map((p) => [p.name, value(p)]).filter(([, v]) => v !== undefined));
      try {
        if (editing) await send('PATCH', `${rest}/${model.plural}/${encodeURIComponent(editing[model.id])}`, row);
        else await send('POST', `${rest}/${model.plural}`, row);
        edit(null);
      } catch (problem) {
        error.textContent = problem.message;
      }
    },
  }, ...editable.map((p) => (p.type === 'boolean' ? element('label', {}, inputs[p.name], ` ${p.name}`) : inputs[p.name])),
  submit, cancel, error);

  const collection = connection.live(model.name);
  window.gatewayPage.collections[model.name] = collection;
  collection.subscribe((_collection, change) => {
    body.replaceChildren(...collection.rows.map((row) => {
      const tr = element('tr', { 'data-id': cell(row[model.id]) },
        ...columns.map((name) => element('td', {}, cell(row[name]))),
        element('td', {},
          element('button', { onclick: () => edit(row) }, 'Edit'), ' ',
          element('button', { onclick: () => send('DELETE', `${rest}/${model.plural}/${encodeURIComponent(row[model.id])}`).catch((p) => { error.textContent = p.message; }) }, 'Delete')));
      if (change && change.target === row[model.id]) tr.classList.add('flash');
      return tr;
    }));
  });
  return element('section', { id: `model-${model.name}` },
    element('h2', {}, `${model.name} `, element('small', {}, `${rest}/${model.plural}`)),
    element('table', {}, element('thead', {}, element('tr', {}, ...columns.map((name) => element('th', {}, name)), element('th'))), body),
    form);
}

document.getElementById('models').append(...models.map(modelSection));
