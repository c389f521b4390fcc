/**
 * Text a request or a guest wrote (labels, messages, stderr tails, console output) on its way to
 * an operator's terminal: control characters become visible escapes, so nobody can move the
 * cursor, rewrite earlier lines, set the window title or reorder text with bidi overrides on the
 * operator's screen. `--json` output is never touched (it escapes what JSON must).
 */
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const CONTROL_OR_LINE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function escape(char: string): string {
  switch (char) {
    case '\n':
      return '\\n';
    case '\t':
      return '\\t';
    case '\r':
      return '\\r';
    case '\u001b':
      return '\\e';
    default: {
      const code = char.codePointAt(0)!;
      return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u{${code.toString(16)}}`;
    }
  }
}

/** One line: every control character escaped, newlines and tabs too (a table cell). */
export function safeCell(text: string): string {
  return text.replace(CONTROL_OR_LINE, escape);
}

/** Several lines: control characters escaped, newlines and tabs kept (a field value, a log). */
export function safeLines(text: string): string {
  return text.replace(CONTROL, escape);
}
