// JSON-RPC 2.0 over one WebSocket: the page's ACP connection to the server.
// It knows framing, ids and errors; what the methods mean is app.js's business.

/** A JSON-RPC error answer, as the server worded it, to a request for `method`. */
export class RpcError extends Error {
  constructor(code, message, data, method) {
    super(message);
    this.code = code;
    this.data = data;
    this.method = method;
  }
}

/** Method not found: the server (or this page) does not offer the method. */
export const METHOD_NOT_FOUND = -32601;

export class Connection {
  /**
   * Open the WebSocket at `url`. Resolves once it is open; rejects if the
   * server refuses it (the browser does not say why).
   */
  static open(url) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const refused = () => reject(new Error('the server refused the connection'));
      ws.addEventListener('error', refused, { once: true });
      ws.addEventListener(
        'open',
        () => {
          ws.removeEventListener('error', refused);
          resolve(new Connection(ws));
        },
        { once: true },
      );
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.nextId = 1;
    this.pending = new Map();
    this.notificationHandlers = [];
    this.requestHandler = null;
    this.closeHandlers = [];
    ws.addEventListener('message', (event) => this.receive(event.data));
    ws.addEventListener('close', (event) => {
      const error = new Error('the connection to the server closed');
      for (const { reject } of this.pending.values()) reject(error);
      this.pending.clear();
      for (const handler of this.closeHandlers) handler(event);
    });
  }

  /** Send a request; resolves with its result, rejects with an RpcError. */
  request(method, params) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.send({ jsonrpc: '2.0', id, method, params });
    });
  }

  notify(method, params) {
    this.send({ jsonrpc: '2.0', method, params });
  }

  /** `handler(method, params)` for every notification from the server. */
  onNotification(handler) {
    this.notificationHandlers.push(handler);
  }

  /**
   * `handler(method, params, id)` answers the server's requests: it returns
   * (or resolves to) the result, or throws an RpcError.
   */
  onRequest(handler) {
    this.requestHandler = handler;
  }

  onClose(handler) {
    this.closeHandlers.push(handler);
  }

  close() {
    this.ws.close(1000, 'the page is done');
  }

  send(message) {
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
    }
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.method === undefined) {
      const waiting = this.pending.get(message.id);
      if (!waiting) return;
      this.pending.delete(message.id);
      if (message.error) {
        const { code, message: text, data: extra } = message.error;
        waiting.reject(new RpcError(code, text, extra, waiting.method));
      } else {
        waiting.resolve(message.result);
      }
      return;
    }
    if (message.id === undefined) {
      for (const handler of this.notificationHandlers) handler(message.method, message.params);
      return;
    }
    this.answer(message);
  }

  async answer({ id, method, params }) {
    try {
      if (!this.requestHandler) throw new RpcError(METHOD_NOT_FOUND, `${method} is not offered by this client`);
      const result = await this.requestHandler(method, params, id);
      this.send({ jsonrpc: '2.0', id, result });
    } catch (error) {
      const code = error instanceof RpcError ? error.code : -32603;
      this.send({ jsonrpc: '2.0', id, error: { code, message: error.message } });
    }
  }
}
