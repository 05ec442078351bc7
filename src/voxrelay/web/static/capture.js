// The microphone through an AudioWorklet, and its audio to the server as short
// numbered uploads (browsers cannot stream a request body over HTTP/1.1).

const WORKLET_URL = "/web/capture-worklet.js";
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const loaded = new WeakSet();

export class Microphone {
  constructor(context, rate, { onChunk, onLevel }) {
    this.context = context;
    this.rate = rate;
    this.onChunk = onChunk;
    this.onLevel = onLevel;
  }

  async start() {
    if (!navigator.mediaDevices || !window.AudioWorkletNode) {
      throw new Error("this page needs HTTPS (or localhost) and a current browser to use the microphone");
    }
    // Echo cancellation keeps the answer coming out of the speakers from being heard as
    // the user; noise suppression and gain control are left to the server's recogniser,
    // which understands the unprocessed voice better.
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
    if (!loaded.has(this.context)) {
      await this.context.audioWorklet.addModule(WORKLET_URL);
      loaded.add(this.context);
    }
    this.source = this.context.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.context, "voxrelay-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { targetRate: this.rate },
    });
    // Connected to the output through silence, so every browser keeps pulling it.
    this.silence = this.context.createGain();
    this.silence.gain.value = 0;
    this.source.connect(this.node).connect(this.silence).connect(this.context.destination);
    this.node.port.onmessage = (event) => {
      this.onChunk(toLittleEndian(new Uint8Array(event.data.pcm)));
      this.onLevel(event.data.level);
    };
  }

  stop() {
    if (this.node) {
      this.node.port.postMessage("stop");
      this.node.port.onmessage = null;
      this.source.disconnect();
      this.node.disconnect();
      this.silence.disconnect();
    }
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    this.node = this.stream = null;
    this.onLevel(0);
  }
}

function toLittleEndian(bytes) {
  if (!LITTLE_ENDIAN) {
    for (let i = 0; i + 1 < bytes.length; i += 2) [bytes[i], bytes[i + 1]] = [bytes[i + 1], bytes[i]];
  }
  return bytes;
}

// Sends what the microphone gave, in order and one request at a time (what gathers
// meanwhile goes in the next one), each numbered with `seq`: a retry after a lost
// answer carries the same number and bytes, and the server forwards it only once.
export class Uploader {
  constructor(api, conversationId, rate, { onFatal, onSent }) {
    this.api = api;
    this.conversationId = conversationId;
    this.minBytes = (rate / 10) * 2; // 100 ms
    this.maxBytes = rate * 2 * 10; // at most 10 s wait while the server cannot be reached
    this.onFatal = onFatal;
    this.onSent = onSent;
    this.seq = 0;
    this.pending = [];
    this.pendingBytes = 0;
    this.sending = null;
    this.stopped = false;
    this.dropped = 0;
  }

  push(bytes) {
    if (this.stopped) return;
    this.pending.push(bytes);
    this.pendingBytes += bytes.length;
    while (this.pendingBytes > this.maxBytes && this.pending.length > 1) {
      const oldest = this.pending.shift();
      this.pendingBytes -= oldest.length;
      this.dropped += oldest.length;
    }
    if (this.pendingBytes >= this.minBytes) this.pump();
  }

  // Everything pushed so far is at the server once this resolves.
  async flush() {
    while (!this.stopped && (this.sending || this.pendingBytes > 0)) {
      await (this.sending || this.pump(true));
    }
  }

  stop() {
    this.stopped = true;
    this.pending = [];
    this.pendingBytes = 0;
  }

  pump(force = false) {
    if (this.sending || this.stopped || this.pendingBytes === 0) return this.sending;
    if (!force && this.pendingBytes < this.minBytes) return null;
    const body = new Uint8Array(this.pendingBytes);
    let offset = 0;
    for (const part of this.pending) {
      body.set(part, offset);
      offset += part.length;
    }
    this.pending = [];
    this.pendingBytes = 0;
    const seq = this.seq++;
    this.sending = this.send(seq, body).finally(() => {
      this.sending = null;
      if (this.pendingBytes >= this.minBytes) this.pump();
    });
    return this.sending;
  }

  async send(seq, body) {
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        await this.api.upload(this.conversationId, seq, body);
        this.onSent(seq, body.length);
        return;
      } catch (error) {
        if (!error.transient) {
          this.stop();
          this.onFatal(error);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** attempt, 4000)));
      }
    }
  }
}
