// Records LoopBack 3's replies for the compatibility corpus (tests/compat/apps/*), once, so that the test
// suite needs no Node. Not run by `make test`. Usage, from a scratch directory outside the repository:
//
//   mkdir -p /tmp/lb3 && cd /tmp/lb3 && npm init -y && npm install loopback@3 loopback-boot@3 strong-error-handler
//   NODE_PATH=/tmp/lb3/node_modules node <repo>/tests/compat/record.js <repo>/tests/compat/apps/*
//
// Each app directory holds `models/*.json`, `model-config.json` and `requests.json` (a list of
// [method, path, body-or-null]); this writes `replies.json` beside them: one {status, body} per request,
// body parsed as JSON (null for an empty body). Every model is attached to one memory data source, as the
// gateway puts every model in one database; `dataSource: null` entries stay unattached.
'use strict';
const fs = require('fs');
const path = require('path');
const loopback = require('loopback');
const boot = require('loopback-boot');
const errorHandler = require('strong-error-handler');

async function record(appDir) {
  const modelConfig = JSON.parse(fs.readFileSync(path.join(appDir, 'model-config.json'), 'utf8'));
  for (const [name, entry] of Object.entries(modelConfig)) {
    if (!name.startsWith('_') && entry.dataSource) entry.dataSource = 'db';
  }
  modelConfig._meta = {sources: ['loopback/common/models', path.join(appDir, 'models')]};
  const app = loopback();
  await new Promise((resolve, reject) => boot(app, {
    appRootDir: appDir,
    config: {restApiRoot: '/api', port: 0, host: '127.0.0.1'},
    models: modelConfig,
    modelsRootDir: appDir,
    dataSources: {db: {name: 'db', connector: 'memory'}},
    bootDirs: [],
    middleware: {},
    components: {},
  }, (err) => (err ? reject(err) : resolve())));
  app.use('/api', loopback.rest());
  app.use(errorHandler({debug: false, log: false}));
  const server = await new Promise((resolve) => { const s = app.listen(0, '127.0.0.1', () => resolve(s)); });
  const base = `http://127.0.0.1:${server.address().port}`;
  const requests = JSON.parse(fs.readFileSync(path.join(appDir, 'requests.json'), 'utf8'));
  const replies = [];
  for (const [method, url, body] of requests) {
    const response = await fetch(base + url, {
      method,
      headers: {'content-type': 'application/json', accept: 'application/json'},
      body: body === null ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    replies.push({status: response.status, body: text ? JSON.parse(text) : null});
  }
  server.close();
  fs.writeFileSync(path.join(appDir, 'replies.json'), JSON.stringify(replies, null, 1) + '\n');
  console.log(`${path.basename(appDir)}: ${replies.length} replies recorded`);
}

(async () => {
  for (const appDir of process.argv.slice(2)) await record(path.resolve(appDir));
})().catch((err) => { console.error(err); process.exit(1); });
