// One live conversation over HTTP streaming: the session is started over REST, its
// events read with EventSource (which resumes by itself with Last-Event-ID when the
// stream drops), the microphone sent as numbered uploads, the answer played.

import { Microphone, Uploader } from "./capture.js";
import { Player } from "./playback.js";

const INPUT_RATE = 16000;
const OUTPUT_RATE = 24000;
const EVENTS = [
  "conversation_started", "speech_started", "speech_stopped", "transcript",
  "response_started", "audio", "response_done", "error", "conversation_ended",
];
const RECONNECT_GIVE_UP_MS = 60000;

export class Conversation {
  // `context`: an AudioContext made in the click that started it (browsers let
  // only a user's gesture start sound). `view`: state(name, text), transcript, stats(obj).
  constructor({ api, context, pushToTalk, view }) {
    this.api = api;
    this.context = context;
    this.pushToTalk = pushToTalk;
    this.view = view;
    this.phase = "connecting"; // what the conversation is doing
    this.linkDown = false; // the stream is being resumed
    this.lastId = 0;
    this.lastType = null;
    this.responding = null; // responseId of the answer being generated
    this.talking = false;
    this.ended = false;
    this.stats = { events: 0, duplicates: 0, chunks: 0, stalls: 0, sound: 0, uploads: 0, reconnects: 0 };
  }

  async start() {
    this.show();
    const { session } = await this.api.startSession({
      inputSampleRate: INPUT_RATE,
      outputSampleRate: OUTPUT_RATE,
      turnDetection: this.pushToTalk ? "manual" : "server_vad",
    });
    this.session = session;
    this.conversationId = session.conversationId;
    if (this.ending) {
      this.finish("Conversation ended");
      this.api.end(this.conversationId).catch(() => {});
      return;
    }
    this.player = new Player(this.context, {
      onIdle: () => this.playbackIdle(),
      onSound: (frames) => this.count("sound", frames),
    });
    this.uploader = new Uploader(this.api, this.conversationId, session.inputSampleRate, {
      onFatal: (error) => this.failed(error),
      onSent: () => this.count("uploads", this.stats.uploads + 1),
    });
    this.open({ lastEventId: 0 }); // from the first event: nothing between start and listen is lost
    this.view.live(this);
    try {
      this.microphone = new Microphone(this.context, session.inputSampleRate, {
        onChunk: (pcm) => {
          if (!this.pushToTalk || this.talking) this.uploader.push(pcm);
        },
        onLevel: (level) => this.view.level(level),
      });
      await this.microphone.start();
      if (this.ended) {
        this.microphone.stop(); // ended while the browser asked for it
        return;
      }
      this.view.microphone(true);
    } catch (error) {
      this.microphone = null;
      this.view.transcript.note(`Microphone unavailable (${error.message}); you can still type.`);
    }
    this.microphoneTried = true;
    if (this.phase === "connecting" && this.started) this.settle();
  }

  open(params) {
    const url = this.api.streamUrl({
      conversationId: this.conversationId,
      sessionId: this.session.id,
      ...params,
    });
    const source = new EventSource(url);
    this.source = source;
    source.onopen = () => {
      this.reconnectingSince = null;
      if (this.linkDown) {
        this.linkDown = false;
        this.show();
      }
    };
    source.onerror = () => this.streamError(source);
    for (const type of EVENTS) source.addEventListener(type, (event) => this.receive(type, event));
  }

  streamError(source) {
    if (this.ended || source !== this.source) return;
    this.linkDown = true;
    this.reconnectingSince = this.reconnectingSince || Date.now();
    this.count("reconnects", this.stats.reconnects + 1);
    this.show();
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (an error answer): ask how the session is, then go on
      // from the last event seen.
      source.close();
      this.resumeByHand();
    }
    // Otherwise (CONNECTING) the browser retries by itself, sending Last-Event-ID.
  }

  async resumeByHand() {
    if (Date.now() - this.reconnectingSince > RECONNECT_GIVE_UP_MS) {
      this.failed(new Error("the stream could not be resumed"));
      return;
    }
    try {
      const { session } = await this.api.session(this.session.id);
      if (session.status !== "active") {
        this.finish("the session ended");
        return;
      }
      if (!this.ended) this.open({ lastEventId: this.lastId });
    } catch (error) {
      if (!error.transient) {
        this.failed(error);
        return;
      }
      setTimeout(() => this.resumeByHand(), 1000);
    }
  }

  receive(type, event) {
    // The browser's own "error" (the connection failed) shares the name of the
    // server's error event, but carries no data; onerror handles it.
    if (!(event instanceof MessageEvent)) return;
    const id = Number(event.lastEventId);
    // Each event carries the next number: one already seen is not shown again.
    if (id < this.lastId || (id === this.lastId && type === this.lastType)) {
      this.count("duplicates", this.stats.duplicates + 1);
      return;
    }
    this.lastId = id;
    this.lastType = type;
    this.count("events", this.stats.events + 1);
    this.view.lastEventId(id);
    const data = JSON.parse(event.data);
    const transcript = this.view.transcript;
    switch (type) {
      case "conversation_started":
        this.started = true;
        if (this.phase === "connecting" && this.microphoneTried) this.settle();
        break;
      case "speech_started":
        this.stopPlayback();
        transcript.begin("user", data.itemId);
        this.set("listening");
        break;
      case "speech_stopped":
        this.set("thinking");
        break;
      case "transcript":
        if (data.role === "assistant") this.answerItem = data.itemId;
        if (data.final) transcript.final(data.role, data.itemId, data.text);
        else transcript.delta(data.role, data.itemId, data.delta);
        break;
      case "response_started":
        this.responding = data.responseId;
        this.answerItem = null;
        if (this.phase !== "speaking") this.set("thinking");
        break;
      case "audio":
        this.player.enqueue(data.responseId, data.audio, this.session.outputSampleRate);
        this.stats.stalls = this.player.stalls;
        this.count("chunks", this.player.chunks);
        if (this.player.active) this.set("speaking");
        break;
      case "response_done":
        if (this.responding === data.responseId) this.responding = null;
        if (!this.player.active && this.phase !== "listening") this.settle();
        break;
      case "error":
        this.view.transcript.note(`Error: ${data.message}`);
        this.view.state("error", `Error: ${data.message}`);
        break;
      case "conversation_ended":
        this.finish(endedText(data.reason));
        break;
    }
  }

  // The user starts speaking: the answer stops where they heard it to, and the
  // server is told how much that was.
  stopPlayback() {
    if (!this.player) return;
    const responseId = this.player.playing.length ? this.player.playing[0].responseId : this.responding;
    if (!responseId) return;
    const heard = this.player.stop(responseId);
    this.responding = null;
    if (this.answerItem) this.view.transcript.interrupted(this.answerItem);
    this.api.interrupt(this.conversationId, heard).catch(() => {});
  }

  async press() {
    if (!this.pushToTalk || this.talking || this.ended) return;
    this.talking = true;
    this.stopPlayback();
    this.set("listening");
  }

  async release() {
    if (!this.talking || !this.uploader) {
      this.talking = false;
      return;
    }
    this.talking = false;
    this.set("thinking");
    await this.uploader.flush();
    try {
      await this.api.commit(this.conversationId);
    } catch (error) {
      this.view.state("error", `Error: ${error.message}`);
    }
  }

  async say(text) {
    this.stopPlayback();
    const { itemId } = await this.api.text(this.conversationId, text);
    this.view.transcript.final("user", itemId, text);
    if (!this.responding && !this.player.active) this.set("thinking");
  }

  async end() {
    if (this.ended || this.ending) return;
    this.ending = true;
    // No more audio: what is in flight may be refused once the session is over.
    if (this.uploader) this.uploader.stop();
    if (this.microphone) this.microphone.stop();
    try {
      if (this.conversationId) await this.api.end(this.conversationId);
    } catch {
      // Ended here all the same; the server ends an abandoned session after its grace period.
    } finally {
      this.finish("Conversation ended");
    }
  }

  playbackIdle() {
    if (!this.responding && this.phase === "speaking") this.settle();
  }

  settle() {
    if (!this.microphone) this.set("typing");
    else this.set(this.pushToTalk && !this.talking ? "ready" : "listening");
  }

  set(phase) {
    this.phase = phase;
    this.show();
  }

  show() {
    if (this.ended) return;
    if (this.linkDown) this.view.state("reconnecting", "Reconnecting…");
    else this.view.state(this.phase, PHASES[this.phase]);
  }

  failed(error) {
    if (this.ending || this.ended) return;
    this.finish(null);
    this.view.state("error", `Error: ${error.message}`);
  }

  finish(text) {
    if (this.ended) return;
    this.ended = true;
    if (this.source) this.source.close();
    if (this.uploader) this.uploader.stop();
    if (this.microphone) this.microphone.stop();
    if (this.player) this.player.close();
    this.context.close().catch(() => {});
    this.view.microphone(false);
    if (text) {
      this.view.transcript.note(text);
      this.view.state("idle", text);
    }
    this.view.ended(this);
  }

  count(name, value) {
    this.stats[name] = value;
    this.view.stats(this.stats);
  }
}

const PHASES = {
  connecting: "Connecting…",
  listening: "Listening",
  ready: "Ready: hold the talk button to speak",
  typing: "No microphone: type a message",
  thinking: "Thinking…",
  speaking: "Speaking",
};

function endedText(reason) {
  return {
    client_end: "Conversation ended",
    idle_timeout: "Conversation ended: nothing was said for a while",
    server_shutdown: "Conversation ended: the server is restarting",
    upstream_failed: "Conversation ended: the voice model could not be reached",
    quota_exceeded: "Conversation ended: the usage limit was reached",
  }[reason] || `Conversation ended (${reason})`;
}
