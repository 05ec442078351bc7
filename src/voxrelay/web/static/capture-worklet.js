// Microphone samples, at the audio context's rate, to PCM16 at the session's input
// rate in 20 ms chunks, each with its level (RMS, 0..1). Runs on the audio thread.

class LowPass {
  // One RBJ biquad low-pass, enough to keep what the resampling drops from folding back.
  constructor(cutoff, rate) {
    const w = (2 * Math.PI * cutoff) / rate;
    const alpha = Math.sin(w) / (2 * Math.SQRT1_2);
    const cos = Math.cos(w);
    const a0 = 1 + alpha;
    this.b0 = (1 - cos) / 2 / a0;
    this.b1 = (1 - cos) / a0;
    this.b2 = this.b0;
    this.a1 = (-2 * cos) / a0;
    this.a2 = (1 - alpha) / a0;
    this.x1 = this.x2 = this.y1 = this.y2 = 0;
  }

  run(samples) {
    const out = new Float32Array(samples.length);
    for (let i = 0; i < samples.length; i++) {
      const x = samples[i];
      const y = this.b0 * x + this.b1 * this.x1 + this.b2 * this.x2 - this.a1 * this.y1 - this.a2 * this.y2;
      this.x2 = this.x1;
      this.x1 = x;
      this.y2 = this.y1;
      this.y1 = y;
      out[i] = y;
    }
    return out;
  }
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const target = options.processorOptions.targetRate;
    this.step = sampleRate / target; // input samples per output sample
    this.filter = target < sampleRate ? new LowPass(0.45 * target, sampleRate) : null;
    this.position = 0; // of the next output sample; -1 is the previous block's last sample
    this.previous = 0;
    this.size = Math.round(target / 50);
    this.chunk = new Int16Array(this.size);
    this.filled = 0;
    this.squares = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === "stop") this.running = false;
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const samples = this.filter ? this.filter.run(channels[0]) : channels[0];
    const count = samples.length;
    let t = this.position;
    while (t < count - 1) {
      const i = Math.floor(t);
      const a = i < 0 ? this.previous : samples[i];
      const value = a + (samples[i + 1] - a) * (t - i);
      this.push(value);
      t += this.step;
    }
    this.position = t - count;
    this.previous = samples[count - 1];
    return true;
  }

  push(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.squares += clipped * clipped;
    this.chunk[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    if (this.filled === this.size) {
      const level = Math.sqrt(this.squares / this.filled);
      this.port.postMessage({ pcm: this.chunk.buffer, level }, [this.chunk.buffer]);
      this.chunk = new Int16Array(this.size); // the last one was handed over
      this.filled = 0;
      this.squares = 0;
    }
  }
}

registerProcessor("voxrelay-capture", CaptureProcessor);
