/*! highlight.js 11.12.0 (es/languages/plaintext.js) | BSD-3-Clause, in ../LICENSE */
/*
Language: Plain text
Author: Egor Rogov (e.rogov@postgrespro.ru)
Description: Plain text without any highlighting.
Category: common
*/

function plaintext(hljs) {
  return {
    name: 'Plain text',
    aliases: [
      'text',
      'txt'
    ],
    disableAutodetect: true
  };
}

export { plaintext as default };
