// The REST side of the contract, with the device token as a Bearer header.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  // Worth trying again: the network, a timeout, a server that is busy or restarting.
  get transient() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

export function createApi(getToken) {
  async function request(method, path, { json, body, contentType } = {}) {
    const headers = { Authorization: `Bearer ${getToken()}` };
    let payload = body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(json);
    } else if (contentType) {
      headers["Content-Type"] = contentType;
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body: payload, cache: "no-store" });
    } catch {
      throw new ApiError(0, "network_error", "the server cannot be reached");
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = data && data.error ? data.error : {};
      throw new ApiError(
        response.status,
        error.code || "http_error",
        error.message || `the server answered ${response.status}`,
      );
    }
    return data;
  }

  const query = (params) => new URLSearchParams(params).toString();

  return {
    startSession: (options) => request("POST", "/realtime/session", { json: options }),
    session: (id) => request("GET", `/realtime/session/${encodeURIComponent(id)}`),
    upload: (conversationId, seq, pcm) =>
      request("POST", `/realtime/upload?${query({ conversationId, seq })}`, {
        body: pcm,
        contentType: "application/octet-stream",
      }),
    commit: (conversationId) => request("POST", `/realtime/commit?${query({ conversationId })}`),
    text: (conversationId, text) => request("POST", "/realtime/text", { json: { conversationId, text } }),
    interrupt: (conversationId, playedMs) =>
      request("POST", `/realtime/interrupt?${query({ conversationId, playedMs })}`),
    end: (conversationId) => request("POST", "/realtime/end", { json: { conversationId } }),
    conversations: () => request("GET", "/conversations?limit=50"),
    conversation: (id) => request("GET", `/conversations/${encodeURIComponent(id)}`),
    deleteConversation: (id) => request("DELETE", `/conversations/${encodeURIComponent(id)}`),
    streamUrl: (params) => `/realtime/stream?${query({ ...params, access_token: getToken() })}`,
  };
}
