// The answer's audio through Web Audio: each chunk starts exactly where the one
// before it ends, so the answer plays without gaps however the chunks arrive.
// An analyser after the output gain counts the moments sound actually came out.

const LEAD_SECONDS = 0.06; // first chunk (or one after a stall) starts this far ahead
const SOUND_RMS = 0.003;
const WATCH_MS = 50;

export class Player {
  constructor(context, { onIdle, onSound }) {
    this.context = context;
    this.onIdle = onIdle;
    this.onSound = onSound;
    this.output = context.createGain();
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 1024;
    this.output.connect(this.analyser).connect(context.destination);
    this.playing = []; // {source, start, duration, responseId}
    this.heardMs = new Map(); // responseId -> ms of it already played out
    this.cancelled = new Set();
    this.started = new Set(); // answers that have begun to play
    this.nextTime = 0;
    this.chunks = 0;
    this.stalls = 0; // chunks of an answer already playing that came too late to follow on
    this.soundFrames = 0;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.watch = setInterval(() => this.listen(), WATCH_MS);
  }

  enqueue(responseId, base64, rate) {
    if (this.cancelled.has(responseId)) return;
    const pcm = decodePcm16(base64);
    if (pcm.length === 0) return;
    const buffer = this.context.createBuffer(1, pcm.length, rate);
    buffer.copyToChannel(pcm, 0);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.output);
    const now = this.context.currentTime;
    if (this.nextTime < now + 0.01) {
      if (this.started.has(responseId)) this.stalls++;
      this.nextTime = now + LEAD_SECONDS;
    }
    const entry = { source, start: this.nextTime, duration: buffer.duration, responseId };
    source.onended = () => this.finished(entry);
    source.start(entry.start);
    this.nextTime += buffer.duration;
    this.started.add(responseId);
    this.playing.push(entry);
    this.chunks++;
  }

  get active() {
    return this.playing.length > 0;
  }

  // Milliseconds of the answer `responseId` that have played out so far.
  playedMs(responseId) {
    const now = this.context.currentTime;
    let ms = this.heardMs.get(responseId) || 0;
    for (const entry of this.playing) {
      if (entry.responseId === responseId) ms += clamp(now - entry.start, 0, entry.duration) * 1000;
    }
    return Math.round(ms);
  }

  // Silence at once; nothing more of `responseId` is played. Answers how much was heard.
  stop(responseId) {
    const heard = this.playedMs(responseId);
    this.cancelled.add(responseId);
    const stopping = this.playing;
    this.playing = [];
    for (const entry of stopping) {
      entry.source.onended = null;
      try {
        entry.source.stop();
      } catch {
        // not started yet in some browsers: disconnecting is enough
      }
      entry.source.disconnect();
    }
    this.nextTime = 0;
    return heard;
  }

  close() {
    clearInterval(this.watch);
    this.stop(null);
    this.output.disconnect();
    this.analyser.disconnect();
  }

  finished(entry) {
    const index = this.playing.indexOf(entry);
    if (index < 0) return;
    this.playing.splice(index, 1);
    this.heardMs.set(entry.responseId, (this.heardMs.get(entry.responseId) || 0) + entry.duration * 1000);
    if (this.playing.length === 0) this.onIdle();
  }

  listen() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let squares = 0;
    for (const value of this.samples) squares += value * value;
    if (Math.sqrt(squares / this.samples.length) > SOUND_RMS) {
      this.soundFrames++;
      this.onSound(this.soundFrames);
    }
  }
}

function decodePcm16(base64) {
  const text = atob(base64);
  const view = new DataView(new ArrayBuffer(text.length));
  for (let i = 0; i < text.length; i++) view.setUint8(i, text.charCodeAt(i));
  const samples = new Float32Array(Math.floor(text.length / 2));
  for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(i * 2, true) / 0x8000;
  return samples;
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}
