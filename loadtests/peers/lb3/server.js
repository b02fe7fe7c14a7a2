// LoopBack 3, the system the gateway replaces: one Todo model on the memory connector, its REST API and
// change stream exactly as `lb` would scaffold them (no boot scripts, no auth). PORT from the environment.
'use strict';
const loopback = require('loopback');

const app = loopback();
app.dataSource('db', {connector: 'memory'});
const Todo = loopback.createModel({
  name: 'Todo',
  base: 'PersistedModel',
  properties: {title: {type: 'string', required: true}, done: {type: 'boolean', default: false}, priority: 'number'},
});
app.model(Todo, {dataSource: 'db', public: true});
app.use('/api', loopback.rest());
app.get('/readyz', (req, res) => res.send('ok'));
const server = app.listen(Number(process.env.PORT || 3000), '127.0.0.1', () => {
  console.log(`lb3 listening on ${server.address().port}`);
});
server.keepAliveTimeout = 60000;
